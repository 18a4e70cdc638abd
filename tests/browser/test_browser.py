"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a live
server and real agents. Screenshots of each main page go to var/test/screenshots/."""

from __future__ import annotations

import os
import shutil

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from scheduling import services
from scheduling.models import WorkItem
from tests.conftest import wait_until
from tests.factories import agent_create, item_running

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CHROMIUM = os.environ.get("SHEPHERD_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = settings.VAR_DIR / "screenshots"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM
    # calls are still synchronous, so Django's async guard stands down while these
    # tests run (the documented workaround for Playwright with Django tests), and
    # only then: `check --deploy` elsewhere in the suite rejects the variable.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def login(browser, live_server, username: str, *, staff: bool = False):
    get_user_model().objects.create_user(username, password="correct horse battery", is_staff=staff)
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    external = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(live_server.url) else None)
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", "correct horse battery")
    page.click("form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.external_requests = external
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_submit_through_a_generated_form_and_watch_it_succeed(browser, live_server, platform):
    platform.start_worker("browser", queues="default", concurrency=2)
    platform.start_supervisor_loop()
    page = login(browser, live_server, "alice")
    page.goto(f"{live_server.url}/submit/demo.progress/")
    page.fill("#id_p_steps", "4")
    page.fill("#id_p_step_seconds", "0.5")
    page.fill("#id_priority", "7")
    shot(page, "submit")
    page.click("form.form button[type=submit]")
    page.wait_for_url("**/items/*/")
    page.evaluate("window.__loaded_once = true")  # survives only if the page never reloads
    page.wait_for_selector(".item-head .state-running, .item-head .state-succeeded", timeout=30_000)
    page.wait_for_selector(".item-head .state-succeeded", timeout=60_000)
    assert page.evaluate("window.__loaded_once") is True
    assert "step 4 of 4" in page.inner_text("#item-live")
    item = WorkItem.objects.get()
    assert (item.status, item.priority, item.submitted_by.username) == ("succeeded", 7, "alice")
    shot(page, "item-detail")
    for url, name in [("/", "overview"), ("/agents/", "agents"), ("/items/", "items")]:
        page.goto(f"{live_server.url}{url}")
        page.wait_for_load_state("networkidle")
        shot(page, name)
    assert page.external_requests == []  # nothing loaded from the internet


def test_cancel_a_running_item(browser, live_server, platform):
    platform.start_worker("browser", queues="default", concurrency=1)
    page = login(browser, live_server, "bob")
    bob = get_user_model().objects.get(username="bob")
    item = services.work_item_submit(work_type="demo.sleep", payload={"seconds": 120}, submitted_by=bob)
    page.goto(f"{live_server.url}/items/{item.pk}/")
    page.wait_for_selector(".item-head .state-running", timeout=30_000)
    page.click("button[data-action=cancel]")
    page.wait_for_selector(".item-head .state-cancelled", timeout=10_000)
    assert "cancel done" in page.inner_text(".messages")
    wait_until(
        lambda: item.attempts.filter(outcome="cancelled").exists(), timeout=10, what="the attempt to end cancelled"
    )


def test_requeue_from_the_dead_letter_page(browser, live_server, platform):
    page = login(browser, live_server, "operator", staff=True)
    agent = agent_create("gone")
    item = item_running(agent, "demo.sleep", payload={"seconds": 0.2})
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", error="disk full", retryable=False)
    platform.start_worker("browser", queues="default", concurrency=1)
    page.goto(f"{live_server.url}/dead-letter/")
    assert "disk full" in page.inner_text("main")
    shot(page, "dead-letter")
    page.click(f"form[action='/items/{item.pk}/requeue/'] button")
    page.wait_for_url(f"{live_server.url}/dead-letter/")
    assert "requeue done" in page.inner_text(".messages")
    wait_until(
        lambda: WorkItem.objects.filter(pk=item.pk, status="succeeded").exists(),
        timeout=60,
        what="the requeued item to succeed",
        logs=platform,
    )
    for url, name in [("/escalations/", "escalations"), ("/interventions/", "interventions")]:
        page.goto(f"{live_server.url}{url}")
        shot(page, name)


def test_an_invalid_form_shows_its_errors_and_creates_nothing(browser, live_server):
    page = login(browser, live_server, "carol")
    page.goto(f"{live_server.url}/submit/demo.sleep/")
    page.fill("#id_p_seconds", "-5")
    page.click("form.form button[type=submit]")
    error = page.inner_text(".field.has-error .field-error")
    assert "greater than or equal to 0" in error
    shot(page, "submit-errors")
    page.goto(f"{live_server.url}/submit/raw/")
    page.select_option("#id_work_type", "demo.sleep")
    page.fill("#id_payload", '{"seconds": "soon"}')
    page.click("form.form button[type=submit]")
    assert "is not of type 'number'" in page.inner_text(".field.has-error")
    assert WorkItem.objects.count() == 0


def test_a_user_cannot_open_another_users_item(browser, live_server):
    owner = get_user_model().objects.create_user("dave", password="x")
    item = services.work_item_submit(work_type="demo.sleep", submitted_by=owner)
    page = login(browser, live_server, "erin")
    response = page.goto(f"{live_server.url}/items/{item.pk}/")
    assert response.status == 404
    page.goto(f"{live_server.url}/items/")
    assert f"#{item.pk}" not in page.inner_text("main")
