"""Progress, budget, deadline and violation monitors, escalations and their notices, on the DB."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from agents.models import Agent
from project.dbclock import now_minus
from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkItemEvent, WorkType
from supervision.models import Escalation, Intervention, SupervisorLease
from supervision.monitors import work_items_stalled
from supervision.services import escalation_acknowledge, escalation_resolve, supervisor_tick
from tests.factories import agent_create, item_running

pytestmark = pytest.mark.django_db


def tick():
    SupervisorLease.objects.update(expires_at=now_minus(1))  # a fresh interval each call
    return supervisor_tick()


def age_progress(item, seconds):
    """Progress last changed `seconds` ago; the item and its agent keep beating."""
    WorkItem.objects.filter(pk=item.pk).update(
        progress_at=now_minus(seconds), started_at=now_minus(seconds), heartbeat_at=now_minus(0)
    )


def actions(item):
    return list(Intervention.objects.filter(work_item=item).order_by("id").values_list("rule", "action"))


# ---------------------------------------------------------------- progress / stall


def test_stall_is_escalated_then_revoked_and_retried_then_dead_lettered():
    WorkType.objects.filter(name="demo.sleep").update(stall_after=10, max_stalls=2)
    agent = agent_create()
    item = item_running(agent, "demo.sleep")

    age_progress(item, 5)
    tick()
    assert actions(item) == []  # slow, not stalled

    age_progress(item, 12)
    tick()
    assert actions(item) == [("stalled", "escalate")]
    escalation = Escalation.objects.get(work_item=item)
    assert (escalation.problem, escalation.status, escalation.subject) == ("stalled", "open", f"item:{item.pk}")
    evidence = Intervention.objects.get(work_item=item).evidence
    # The three clocks, kept apart.
    assert evidence["progress_age_s"] >= 12 and evidence["item_heartbeat_age_s"] < 5
    assert evidence["agent_heartbeat_age_s"] < 5

    tick()  # still within the second stall_after: nothing new
    assert actions(item) == [("stalled", "escalate")]

    age_progress(item, 21)
    tick()
    item.refresh_from_db()
    assert actions(item)[-1] == ("stalled", "retry")
    assert Attempt.objects.get(work_item=item, number=1).outcome == "stalled"
    assert (item.status, item.attempt) == ("queued", 2)
    assert Escalation.objects.filter(work_item=item).count() == 1  # still the one open escalation

    assert services.work_item_claim(
        work_item_id=item.pk, attempt=2, agent_id=agent.pk, agent_name=agent.name, worker_pid=1, task_id="t"
    )
    age_progress(item, 12)
    tick()
    age_progress(item, 25)
    tick()
    item.refresh_from_db()
    assert item.status == "dead" and "stalled" in item.error
    assert [a for _, a in actions(item)] == ["escalate", "retry", "escalate", "dead_letter"]


def test_wedged_and_dead_agents_are_not_stalls(settings):
    WorkType.objects.filter(name="demo.sleep").update(stall_after=10)
    wedged_agent, dead_agent = agent_create("wedged"), agent_create("dead")
    wedged, dead = item_running(wedged_agent), item_running(dead_agent)
    for item in (wedged, dead):
        age_progress(item, 30)
    # Wedged: the agent beats but the item's lease lapsed. Dead: the agent stopped beating.
    WorkItem.objects.filter(pk=wedged.pk).update(lease_expires_at=now_minus(1), heartbeat_at=now_minus(30))
    Agent.objects.filter(pk=dead_agent.pk).update(last_heartbeat_at=now_minus(settings.AGENT_DEAD_AFTER + 5))
    assert work_items_stalled(agent_dead_after=settings.AGENT_DEAD_AFTER) == []
    tick()
    assert actions(wedged) == [("lease_expired", "retry")]
    assert actions(dead) == [("agent_lost", "retry")]


# ---------------------------------------------------------------- budget


def test_cost_budget_warns_at_80_percent_then_dead_letters_and_escalates():
    agent = agent_create()
    item = item_running(agent, "demo.sleep", budget_cost=10.0)
    services.work_item_charge(work_item_id=item.pk, attempt=1, amount=8.5)
    tick()
    tick()
    warnings = WorkItemEvent.objects.filter(work_item=item, kind="budget_warning")
    assert warnings.count() == 1 and "8.5 of 10.0" in warnings.get().reason
    services.work_item_charge(work_item_id=item.pk, attempt=1, amount=2)
    tick()
    item.refresh_from_db()
    assert item.status == "dead" and item.error.startswith("budget_exceeded")
    assert actions(item) == [("budget_warning", "warn"), ("over_budget", "dead_letter")]
    assert Escalation.objects.get(work_item=item).problem == "budget_exceeded"


def test_run_time_budgets_per_attempt_and_across_attempts():
    WorkType.objects.filter(name="demo.sleep").update(budget_seconds=60)
    agent = agent_create()
    slow = item_running(agent, "demo.sleep")
    Attempt.objects.filter(work_item=slow).update(started_at=now_minus(61))
    total = item_running(agent, "demo.sleep", budget_seconds_total=100)
    # An earlier attempt used 90 s; this one 15 s: each under 60, together over 100.
    WorkItem.objects.filter(pk=total.pk).update(attempt=2, max_attempts=3)
    Attempt.objects.filter(work_item=total).update(number=2, started_at=now_minus(15))
    Attempt.objects.create(
        work_item=total, number=1, started_at=now_minus(200), finished_at=now_minus(110), outcome="failed"
    )
    tick()
    for item in (slow, total):
        item.refresh_from_db()
        assert item.status == "dead", item
    over = {i.work_item_id: i.evidence["over"][0]["budget"] for i in Intervention.objects.filter(rule="over_budget")}
    assert over == {slow.pk: "budget_seconds", total.pk: "budget_seconds_total"}


# ---------------------------------------------------------------- deadline


def test_deadline_escalates_or_cancels_as_the_work_type_says():
    past = timezone.now() - timedelta(seconds=5)
    escalated = services.work_item_submit(work_type="demo.sleep", complete_by=past)
    WorkType.objects.filter(name="demo.noop").update(deadline_action="cancel")
    cancelled = services.work_item_submit(work_type="demo.noop", complete_by=past)
    future = services.work_item_submit(work_type="demo.noop", complete_by=timezone.now() + timedelta(hours=1))
    tick()
    tick()
    assert actions(escalated) == [("deadline_missed", "escalate")]
    assert Escalation.objects.get(work_item=escalated).problem == "deadline_missed"
    assert WorkItem.objects.get(pk=cancelled.pk).status == "cancelled"
    assert actions(cancelled) == [("deadline_missed", "cancel")]
    assert actions(future) == []


# ---------------------------------------------------------------- violations


def test_poison_item_is_dead_lettered_with_attempts_left(settings):
    settings.SHEPHERD_POISON_AFTER_LOST = 2
    agent = agent_create()
    item = item_running(agent, "demo.sleep")
    WorkItem.objects.filter(pk=item.pk).update(max_attempts=5)
    for attempt in (1, 2):
        services.work_item_fail(
            work_item_id=item.pk, attempt=attempt, actor="t", error="pool process died", outcome="lost", retry_delay=60
        )
        if attempt == 1:
            services.work_item_retry(work_item_id=item.pk, actor="t")
            services.work_items_release()
            assert services.work_item_claim(
                work_item_id=item.pk, attempt=2, agent_id=agent.pk, agent_name=agent.name, worker_pid=1, task_id="t"
            )
    tick()
    item.refresh_from_db()
    assert (item.status, item.attempt) == ("dead", 2)
    assert item.error.startswith("poison")
    assert actions(item) == [("poison", "dead_letter")]


@pytest.fixture
def failure_rate_after_four(settings):
    settings.SHEPHERD_FAILURE_RATE_MIN_ATTEMPTS = 4
    settings.SHEPHERD_FAILURE_RATE_THRESHOLD = 0.75
    return settings


def fail_four(agent, work_type, **how):
    for _ in range(4):
        item = item_running(agent, work_type)
        services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", **how)


def test_failing_work_type_is_paused_and_escalated(failure_rate_after_four):
    agent = agent_create()
    fail_four(agent, "demo.fail", error="boom", retryable=False)
    ok = item_running(agent, "demo.sleep")
    services.work_item_succeed(work_item_id=ok.pk, attempt=1, actor="t", result=None)
    tick()
    assert WorkType.objects.get(name="demo.fail").paused
    assert not WorkType.objects.get(name="demo.sleep").paused
    intervention = Intervention.objects.get(rule="failure_rate")
    assert (intervention.action, intervention.work_type) == ("pause_work_type", "demo.fail")
    assert Escalation.objects.get(subject="work_type:demo.fail").problem == "failure_rate"
    tick()
    assert Intervention.objects.filter(rule="failure_rate").count() == 1  # paused types are not judged again
    pending = services.work_item_submit(work_type="demo.fail")
    services.work_items_release()
    assert WorkItem.objects.get(pk=pending.pk).status == "pending"


def test_an_agent_dying_with_many_items_does_not_pause_their_work_type(failure_rate_after_four):
    # Bench B4 found it: an agent killed while holding 50 items of one type lost 50
    # attempts at once, and the failure-rate rule paused the type, so its retries
    # never ran. A dead host says nothing about the work type.
    settings = failure_rate_after_four
    dying = agent_create("dying")
    survivor = agent_create("survivor")
    Agent.objects.filter(pk__in=[dying.pk, survivor.pk]).update(concurrency=5)  # window room for all five
    items = [item_running(dying, "demo.sleep") for _ in range(5)]
    Agent.objects.filter(pk=dying.pk).update(last_heartbeat_at=now_minus(settings.AGENT_DEAD_AFTER + 5))
    tick()
    tick()
    assert Attempt.objects.filter(work_item__in=items, number=1, outcome="lost").count() == 5
    assert not WorkType.objects.get(name="demo.sleep").paused
    assert not Intervention.objects.filter(rule="failure_rate").exists()
    assert set(WorkItem.objects.filter(pk__in=[i.pk for i in items]).values_list("status", "attempt")) == {
        ("queued", 2)
    }


def test_pool_processes_dying_under_a_live_agent_still_count_as_failures(failure_rate_after_four):
    fail_four(agent_create(), "demo.crash", error="pool process died", outcome="lost", retry_delay=0)
    tick()
    assert WorkType.objects.get(name="demo.crash").paused


def test_agent_outside_its_capabilities_is_recorded_once():
    # The release routes items needing capabilities only to agents that have them;
    # this is the safety net for an item that got there anyway (here: the code's
    # requirements changed while it ran).
    plain = agent_create("plain")
    Agent.objects.filter(pk=plain.pk).update(capabilities=["mem_gb=8"])
    item = item_running(plain, "demo.cpu")
    WorkType.objects.filter(name="demo.cpu").update(capabilities=["gpu", "mem_gb=16"])
    tick()
    tick()
    violation = Intervention.objects.get(rule="capability")
    assert (violation.work_item_id, violation.action) == (item.pk, "record_violation")
    assert violation.evidence["missing"] == ["gpu", "mem_gb=16"]


# ---------------------------------------------------------------- escalations


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), Hook)
    Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def overdue(work_type="demo.sleep"):
    return services.work_item_submit(work_type=work_type, complete_by=timezone.now() - timedelta(seconds=1))


def test_escalations_notify_by_email_and_webhook(settings, webhook):
    settings.SHEPHERD_ESCALATION_EMAILS = ["ops@example.com"]
    settings.SHEPHERD_ESCALATION_WEBHOOK_URL = webhook
    item = overdue()
    tick()
    escalation = Escalation.objects.get(work_item=item)
    assert len(mail.outbox) == 1 and "deadline_missed" in mail.outbox[0].subject
    assert mail.outbox[0].to == ["ops@example.com"]
    assert Hook.received[0]["escalation"]["id"] == escalation.pk
    assert escalation.notified_at is not None and escalation.notify_error == ""


def test_a_failing_webhook_never_breaks_a_tick(settings):
    settings.SHEPHERD_ESCALATION_WEBHOOK_URL = "http://127.0.0.1:9/unreachable"
    settings.SHEPHERD_ESCALATION_WEBHOOK_TIMEOUT = 1
    item = overdue()
    run = tick()
    assert not run.error and run.actions == 1
    escalation = Escalation.objects.get(work_item=item)
    assert escalation.notify_error.startswith("webhook:")


def test_escalation_lifecycle_and_one_unresolved_per_problem():
    item = overdue()
    tick()
    escalation = Escalation.objects.get(work_item=item)
    assert escalation_acknowledge(escalation_id=escalation.pk, by="alice")
    assert not escalation_acknowledge(escalation_id=escalation.pk, by="bob")
    assert escalation_resolve(escalation_id=escalation.pk, by="alice")
    assert not escalation_resolve(escalation_id=escalation.pk, by="alice")
    escalation.refresh_from_db()
    assert (escalation.status, escalation.acknowledged_by, escalation.resolved_by) == ("resolved", "alice", "alice")
    from supervision.services import escalation_open

    first, created = escalation_open(problem="stalled", subject="item:1", summary="x")
    again, created_again = escalation_open(problem="stalled", subject="item:1", summary="y")
    assert created and not created_again and first.pk == again.pk


def test_escalations_command_lists_unresolved():
    item = overdue()
    tick()
    out = StringIO()
    call_command("escalations", "--json", stdout=out)
    rows = json.loads(out.getvalue())
    assert [(row["problem"], row["work_item_id"]) for row in rows] == [("deadline_missed", item.pk)]
    Escalation.objects.update(status="resolved")
    out = StringIO()
    call_command("escalations", stdout=out)
    assert "no unresolved escalations" in out.getvalue()
    out = StringIO()
    call_command("escalations", "--all", stdout=out)
    assert "deadline_missed" in out.getvalue()


def test_admin_acknowledges_and_resolves(admin_client):
    item = overdue()
    tick()
    escalation = Escalation.objects.get(work_item=item)
    url = "/admin/supervision/escalation/"
    response = admin_client.post(url, {"action": "acknowledge", "_selected_action": [escalation.pk]}, follow=True)
    assert [str(m) for m in response.context["messages"]] == ["acknowledge: 1 done, 0 already handled or not allowed"]
    admin_client.post(url, {"action": "resolve", "_selected_action": [escalation.pk]})
    escalation.refresh_from_db()
    assert escalation.status == "resolved" and escalation.resolved_by == "admin"
    assert admin_client.get(f"{url}{escalation.pk}/change/").status_code == 200


def test_progress_resets_the_stall_clock():
    WorkType.objects.filter(name="demo.sleep").update(stall_after=10)
    agent = agent_create()
    item = item_running(agent, "demo.sleep")
    age_progress(item, 15)
    services.work_item_progress_report(work_item_id=item.pk, attempt=1, fraction=0.5)
    tick()
    assert actions(item) == []
    assert WorkItem.objects.filter(pk=item.pk, progress_at__gt=F("started_at")).exists()


def test_a_retry_of_a_stall_is_handed_to_a_live_peer_a_few_times_at_most(monkeypatch):
    from agents import services as agent_services

    monkeypatch.setattr(agent_services.time, "sleep", lambda seconds: None)
    WorkType.objects.filter(name="demo.sleep").update(stall_after=1)
    stalled_on, peer = agent_create("stalled-on@h"), agent_create("peer@h")
    item = item_running(stalled_on, "demo.sleep")
    services.work_item_fail(
        work_item_id=item.pk, attempt=1, actor="t", error="stalled", outcome="stalled", retry_delay=0
    )
    services.work_items_release()
    item.refresh_from_db()
    assert (item.status, item.attempt) == ("queued", 2)
    hand_on = [
        agent_services._hand_on(agent=stalled_on, work_item_id=item.pk, attempt=2)
        for _ in range(agent_services.HAND_ON_AT_MOST + 1)
    ]
    assert hand_on == [True] * agent_services.HAND_ON_AT_MOST + [False]  # then it runs here after all
    assert not agent_services._hand_on(agent=peer, work_item_id=item.pk, attempt=2)  # the peer just runs it
    Agent.objects.filter(pk=peer.pk).update(status="lost")
    other = item_running(stalled_on, "demo.sleep")
    services.work_item_fail(work_item_id=other.pk, attempt=1, actor="t", error="s", outcome="stalled", retry_delay=0)
    assert not agent_services._hand_on(agent=stalled_on, work_item_id=other.pk, attempt=2)  # no live peer
