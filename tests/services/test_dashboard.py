"""Dashboard pages on the DB: logins, ownership, CSRF, forms that create nothing on
bad input, and query counts that do not grow with rows."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling import services
from scheduling.models import WorkItem
from supervision.models import Escalation
from tests.factories import agent_create, item_running

pytestmark = pytest.mark.django_db


def user_make(username: str, *, staff: bool = False):
    return get_user_model().objects.create_user(username, password="pw", is_staff=staff)


def client_for(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


@pytest.fixture
def alice():
    return user_make("alice")


@pytest.fixture
def staff():
    return user_make("operator", staff=True)


PAGES = [
    "/",
    "/agents/",
    "/items/",
    "/requests/",
    "/submit/",
    "/submit/raw/",
    "/submit/batch/",
    "/submit/request/",
    "/submit/demo.sleep/",
]
STAFF_PAGES = ["/dead-letter/", "/interventions/", "/escalations/"]


def test_every_page_needs_a_login():
    for url in PAGES + STAFF_PAGES + ["/items/1/"]:
        response = Client().get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_pages_render_for_users_and_staff(alice, staff):
    item = services.work_item_submit(work_type="demo.sleep", submitted_by=alice)
    for url in [*PAGES, f"/items/{item.pk}/"]:
        assert client_for(alice).get(url).status_code == 200, url
    for url in [*PAGES, *STAFF_PAGES, f"/items/{item.pk}/"]:
        assert client_for(staff).get(url).status_code == 200, url
    for url in STAFF_PAGES:
        assert client_for(alice).get(url).status_code == 302, url  # to the admin login


def test_htmx_polls_get_only_the_live_part(alice):
    item = services.work_item_submit(work_type="demo.sleep", submitted_by=alice)
    page = client_for(alice).get(f"/items/{item.pk}/")
    partial = client_for(alice).get(f"/items/{item.pk}/", headers={"HX-Request": "true"})
    assert b"<html" in page.content and b"<html" not in partial.content
    assert f"#{item.pk}".encode() in partial.content


def test_users_see_only_their_own_items(alice, staff):
    bob = user_make("bob")
    theirs = services.work_item_submit(work_type="demo.sleep", submitted_by=bob)
    mine = services.work_item_submit(work_type="demo.sleep", submitted_by=alice)
    assert client_for(alice).get(f"/items/{theirs.pk}/").status_code == 404
    for action in ("cancel", "retry", "requeue"):
        assert client_for(alice).post(f"/items/{theirs.pk}/{action}/").status_code == 404
    listing = client_for(alice).get("/items/").content.decode()
    assert f"#{mine.pk}<" in listing and f"#{theirs.pk}<" not in listing
    assert client_for(alice).get(f"/items/?id={theirs.pk}").status_code == 200  # no redirect to it
    assert WorkItem.objects.get(pk=theirs.pk).status in ("pending", "queued")
    assert client_for(staff).get(f"/items/{theirs.pk}/").status_code == 200


def test_every_post_needs_csrf(alice, staff):
    agent = agent_create()
    item = services.work_item_submit(work_type="demo.sleep", submitted_by=alice)
    escalation = Escalation.objects.create(problem="stalled", subject=f"item:{item.pk}", summary="x")
    posts = [
        (alice, f"/items/{item.pk}/cancel/", {}),
        (alice, "/submit/demo.sleep/", {"p_seconds": "1"}),
        (alice, "/submit/raw/", {"work_type": "demo.sleep", "payload": "{}"}),
        (staff, f"/agents/{agent.pk}/drain/", {}),
        (staff, f"/escalations/{escalation.pk}/acknowledge/", {}),
        (staff, f"/dead-letter/{item.pk}/edit/", {"payload": "{}"}),
    ]
    for user, url, data in posts:
        assert client_for(user, csrf=True).post(url, data).status_code == 403, url
    assert WorkItem.objects.count() == 1 and WorkItem.objects.get().status != "cancelled"
    assert Escalation.objects.get().status == "open"


def test_generated_form_submits_and_shows_errors_next_to_fields(alice):
    client = client_for(alice)
    form = client.get("/submit/demo.sleep/").content.decode()
    assert 'name="p_seconds"' in form and "How long to sleep." in form
    bad = client.post("/submit/demo.sleep/", {"p_seconds": "-3", "priority": "4"})
    assert bad.status_code == 200
    assert "Ensure this value is greater than or equal to 0" in bad.content.decode()
    assert WorkItem.objects.count() == 0
    good = client.post("/submit/demo.sleep/", {"p_seconds": "2.5", "priority": "7"})
    item = WorkItem.objects.get()
    assert good.status_code == 302 and good["Location"] == f"/items/{item.pk}/"
    assert (item.payload, item.priority, item.submitted_by_id) == ({"seconds": 2.5}, 7, alice.pk)


def test_raw_json_and_batch_forms_create_nothing_on_bad_input(alice):
    client = client_for(alice)
    for payload, message in [("{oops", "not valid JSON"), ('{"seconds": "x"}', "is not of type")]:
        response = client.post("/submit/raw/", {"work_type": "demo.sleep", "payload": payload})
        assert message in response.content.decode()
    lines = b'{"seconds": 1}\n{"seconds": 2}\nnot json\n'
    response = client.post(
        "/submit/batch/", {"work_type": "demo.sleep", "file": SimpleUploadedFile("items.jsonl", lines)}
    )
    assert "line 3 is not valid JSON" in response.content.decode()
    lines = b'{"seconds": 1}\n{"seconds": -2}\n'
    response = client.post(
        "/submit/batch/", {"work_type": "demo.sleep", "file": SimpleUploadedFile("items.jsonl", lines)}
    )
    assert "item 2" in response.content.decode()
    assert WorkItem.objects.count() == 0
    good = b'{"seconds": 1}\n\n{"seconds": 2}\n'
    response = client.post("/submit/batch/", {"work_type": "demo.sleep", "file": SimpleUploadedFile("a.jsonl", good)})
    assert response.status_code == 302 and WorkItem.objects.count() == 2


def test_cancel_from_the_item_page(alice):
    agent = agent_create()
    item = item_running(agent, submitted_by=alice)
    response = client_for(alice).post(f"/items/{item.pk}/cancel/", follow=True)
    assert "cancel done, now cancelled" in response.content.decode()
    again = client_for(alice).post(f"/items/{item.pk}/cancel/", follow=True)
    assert "cannot cancel" in again.content.decode()


def test_dead_letter_edit_validates_then_requeues_with_an_audit_event(staff):
    agent = agent_create()
    item = item_running(agent, "demo.sleep")
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", error="bad input", retryable=False)
    client = client_for(staff)
    bad = client.post(f"/dead-letter/{item.pk}/edit/", {"payload": '{"seconds": "soon"}'})
    assert "is not of type" in bad.content.decode()
    assert WorkItem.objects.get(pk=item.pk).status == "dead"
    good = client.post(f"/dead-letter/{item.pk}/edit/", {"payload": '{"seconds": 0.1}'})
    assert good.status_code == 302
    item.refresh_from_db()
    assert item.status in ("pending", "queued") and item.payload == {"seconds": 0.1}
    event = item.events.filter(to_status="pending").get()
    assert event.actor == "user:operator" and "payload edited" in event.reason


def test_agents_drain_and_resume_are_for_staff(alice, staff):
    agent = agent_create()
    assert client_for(alice).post(f"/agents/{agent.pk}/drain/").status_code == 302  # to the login
    agent.refresh_from_db()
    assert agent.status == "online"
    client_for(staff).post(f"/agents/{agent.pk}/drain/")
    agent.refresh_from_db()
    assert agent.status == "draining"
    client_for(staff).post(f"/agents/{agent.pk}/resume/")
    agent.refresh_from_db()
    assert agent.status == "online"


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "url", ["/", "/agents/", "/items/", "/requests/", "/dead-letter/", "/interventions/", "/escalations/"]
)
def test_page_queries_do_not_grow_with_rows(staff, url):
    client = client_for(staff)

    def grow():
        agent = agent_create(f"agent-{timezone.now().timestamp()}")
        for _ in range(3):
            item = item_running(agent, submitted_by=staff)
            services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", error="x", retryable=False)
            Escalation.objects.create(problem="stalled", subject=f"item:{item.pk}", summary="x", work_item=item)
        services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 5, submitted_by=staff)
        services.request_submit(spec={"items": [{"key": "a", "work_type": "demo.cpu"}]}, submitted_by=staff)

    grow()
    few = _queries(client, url)
    grow()
    grow()
    assert _queries(client, url) == few


def test_item_page_queries_do_not_grow_with_attempts(staff):
    agent = agent_create()
    item = item_running(agent, "demo.sleep", submitted_by=staff)
    WorkItem.objects.filter(pk=item.pk).update(max_attempts=9)
    client = client_for(staff)
    few = _queries(client, f"/items/{item.pk}/")
    for attempt in (1, 2, 3):
        services.work_item_fail(work_item_id=item.pk, attempt=attempt, actor="t", error="x", retry_delay=60)
        services.work_item_retry(work_item_id=item.pk, actor="t")  # due now, whatever the clock's resolution
        services.work_items_release()
        assert services.work_item_claim(
            work_item_id=item.pk, attempt=attempt + 1, agent_id=agent.pk, agent_name="a", worker_pid=1, task_id="t"
        )
    assert _queries(client, f"/items/{item.pk}/") == few


def test_request_upload_graph_and_ownership(alice):
    import json

    client = client_for(alice)
    spec = {
        "name": "nightly",
        "items": [
            {"key": "extract", "work_type": "demo.noop"},
            {"key": "report", "work_type": "demo.noop", "depends_on": ["extract"]},
        ],
    }
    bad = {"items": [{"key": "a", "work_type": "demo.noop", "depends_on": ["a"]}]}
    response = client.post("/submit/request/", {"file": SimpleUploadedFile("r.json", json.dumps(bad).encode())})
    assert "cannot depend on itself" in response.content.decode() and WorkItem.objects.count() == 0
    response = client.post("/submit/request/", {"file": SimpleUploadedFile("r.json", json.dumps(spec).encode())})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "<svg" in page and "extract" in page and "report" in page and "marker-end" in page
    assert "nightly" in client.get("/requests/").content.decode()
    other = client_for(user_make("mallory"))
    assert other.get(response["Location"]).status_code == 404
    assert "nightly" not in other.get("/requests/").content.decode()
