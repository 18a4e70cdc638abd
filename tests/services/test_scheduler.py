"""The scheduler's release: order (priority, aging, urgency, fair share), limits,
pauses, capabilities and why pending items wait."""

from __future__ import annotations

import itertools
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from agents.models import Agent
from project.dbclock import now_minus
from project.exceptions import ValidationError
from scheduling import services
from scheduling.blocking import BlockingFacts, pending_reason_counts
from scheduling.models import Queue, WorkItem, WorkItemEvent, WorkType
from scheduling.services.release import CapableAgents
from supervision.models import Escalation, SupervisorLease
from supervision.services import supervisor_tick
from tests.factories import agent_create, item_claim

pytestmark = pytest.mark.django_db


def release_batches(*, finish: bool = True) -> list[set[int]]:
    """Release until nothing is pending that can go, recording each release's items;
    between releases the released items are cancelled to free the window."""
    batches = []
    for _ in range(1000):
        before = set(WorkItem.objects.filter(status="queued").values_list("id", flat=True))
        services.work_items_release()
        queued = set(WorkItem.objects.filter(status="queued").values_list("id", flat=True)) - before
        if not queued:
            return batches
        batches.append(queued)
        if finish:
            for pk in queued:
                assert services.work_item_cancel(work_item_id=pk, actor="test", reason="make room")
    raise AssertionError("the release never ran dry")


def assert_released_in_order(batches: list[set[int]], expected: list[int]) -> None:
    position = 0
    for batch in batches:
        assert batch == set(expected[position : position + len(batch)]), (position, batch)
        position += len(batch)
    assert position == len(expected)


def submit(n: int = 1, **options) -> list[int]:
    options.setdefault("work_type", "demo.noop")
    return services.work_items_submit_ids(payloads=[{}] * n, **options)


def test_release_order_is_exact_priority_then_age():
    ids = []
    for n in range(40):
        ids += submit(priority=(n * 7) % 10)
    priority = dict(WorkItem.objects.values_list("id", "priority"))
    batches = release_batches()
    assert_released_in_order(batches, sorted(ids, key=lambda pk: (-priority[pk], pk)))


def test_aging_raises_effective_priority_one_level_per_step(settings):
    settings.SHEPHERD_PRIORITY_AGING_SECONDS = 60
    (old,) = submit(priority=0)
    WorkItem.objects.filter(pk=old).update(aging_due_at=now_minus(1))
    assert services.work_items_age() == 1
    assert services.work_items_age() == 0  # the next level is due 60 s later, not now
    row = WorkItem.objects.get(pk=old)
    assert (row.priority, row.effective_priority) == (0, 1)
    assert row.aging_due_at > timezone.now() + timedelta(seconds=50)
    # Waited long enough to reach 9: it goes before newer priority 8 work.
    WorkItem.objects.filter(pk=old).update(effective_priority=8, aging_due_at=now_minus(1))
    services.work_items_age()
    row.refresh_from_db()
    assert (row.effective_priority, row.aging_due_at) == (9, None)
    newer = submit(3, priority=8)
    assert_released_in_order(release_batches(), [old, *newer])


def test_deadline_urgency_orders_within_a_priority(settings):
    now = timezone.now()
    (plain,) = submit(priority=5)
    (later,) = submit(priority=5, complete_by=now + timedelta(hours=2))
    (sooner,) = submit(priority=5, complete_by=now + timedelta(hours=1))
    # A type that typically runs 90 minutes must start before the 1 h deadline's item.
    WorkType.objects.filter(name="demo.sleep").update(typical_run_seconds=90 * 60)
    (long_running,) = submit(work_type="demo.sleep", priority=5, complete_by=now + timedelta(hours=2))
    (urgent_low,) = submit(priority=4, complete_by=now + timedelta(minutes=1))
    assert_released_in_order(release_batches(), [long_running, sooner, later, plain, urgent_low])


def test_typical_run_time_is_refreshed_from_recent_successes():
    agent = agent_create()
    item = services.work_item_submit(work_type="demo.noop", payload={})
    services.work_items_release()
    item.refresh_from_db()
    assert item_claim(item, agent)
    item.attempts.update(started_at=now_minus(12))
    assert services.work_item_succeed(work_item_id=item.pk, attempt=1, actor="test", result=None)
    from scheduling.services import ordering

    ordering._typical_refreshed[0] = 0.0
    assert services.work_types_typical_refresh() >= 1
    assert 11 <= WorkType.objects.get(name="demo.noop").typical_run_seconds <= 14


def test_fair_share_alternates_submitters_within_a_priority():
    alice, bob = (get_user_model().objects.create_user(name) for name in ("alice", "bob"))
    first = submit(4, submitted_by=alice)
    batches = release_batches()  # alice's first items run before bob arrives
    assert_released_in_order(batches, first)
    alices = submit(20, submitted_by=alice)
    bobs = submit(5, submitted_by=bob)
    expected = [pk for pair in zip(alices[:5], bobs, strict=True) for pk in pair] + alices[5:]
    assert_released_in_order(release_batches(), expected)


def test_concurrency_limit_counts_every_queue_and_blocks_the_rest():
    WorkType.objects.filter(name="demo.noop").update(max_concurrency=2)
    agent_create()  # capacity 2 -> window 4 per queue
    ids = submit(6)
    other = submit(1, work_type="demo.noop", queue="cpu")
    services.work_items_release()
    in_flight = WorkItem.objects.filter(work_type="demo.noop", status="queued")
    assert in_flight.count() == 2
    assert set(in_flight.values_list("id", flat=True)) <= set(ids)
    facts = BlockingFacts()
    waiting = WorkItem.objects.filter(status="pending")
    assert {facts.item_reason(item) for item in waiting} == {"concurrency_limit"}
    assert WorkItem.objects.get(pk=other[0]).status == "pending"  # the limit holds across queues
    services.work_item_cancel(work_item_id=in_flight.first().pk, actor="test", reason="free a slot")
    services.work_items_release()
    assert WorkItem.objects.filter(work_type="demo.noop", status="queued").count() == 2


def test_rate_limit_hands_out_start_slots_one_interval_ahead(settings):
    settings.SUPERVISOR_INTERVAL_SECONDS = 1
    WorkType.objects.filter(name="demo.noop").update(rate_limit=4)
    Agent.objects.filter(pk=agent_create().pk).update(concurrency=20)  # the window never binds
    submit(10)
    services.work_items_release()
    assert WorkItem.objects.filter(status="queued").count() == 4  # slots 0, .25, .5, .75 s: one interval
    # A moment later only the slot at +1 s falls inside the next interval.
    services.work_items_release()
    released = list(WorkItem.objects.filter(status="queued").order_by("dispatched_at"))
    assert len(released) == 5
    gaps = [(b.dispatched_at - a.dispatched_at).total_seconds() for a, b in itertools.pairwise(released)]
    assert all(abs(gap - 0.25) < 0.002 for gap in gaps), gaps
    assert set(pending_reason_counts()["default"]) == {"rate_limited"}
    next_slot = WorkType.objects.get(name="demo.noop").rate_next_slot
    assert abs((next_slot - released[0].dispatched_at).total_seconds() - 1.25) < 0.002


def test_paused_queue_and_work_type_keep_items_pending_until_resumed():
    agent_create()
    out = StringIO()
    call_command("pause", "queue", "default", stdout=out)
    assert "queue default paused" in out.getvalue()
    (item,) = submit()
    assert services.work_items_release() == 0
    assert BlockingFacts().item_reason(WorkItem.objects.get(pk=item)) == "paused"
    call_command("resume", "queue", "default", stdout=StringIO())
    call_command("pause", "work-type", "demo.noop", stdout=StringIO())
    assert services.work_items_release() == 0
    call_command("resume", "work-type", "demo.noop", stdout=out)
    assert "work-type demo.noop resumed" in out.getvalue()
    assert services.work_items_release() == 1


def test_pause_command_rejects_unknown_names_and_changes_nothing():
    for args in (["queue", "nope"], ["work-type", "nope.nope"]):
        with pytest.raises(CommandError) as raised:
            call_command("pause", *args, stdout=StringIO())
        assert raised.value.returncode == 2
    assert not WorkType.objects.filter(paused=True).exists()


def test_items_needing_capabilities_wait_for_a_capable_agent_and_are_escalated_once():
    plain = agent_create("plain")
    (item,) = submit(requirements=["gpu", "mem_gb=16"])
    assert WorkItem.objects.get(pk=item).requirements == "gpu,mem_gb=16"
    services.work_items_release()
    assert WorkItem.objects.get(pk=item).status == "pending"
    assert BlockingFacts().item_reason(WorkItem.objects.get(pk=item)) == "no_capable_agent"
    WorkItem.objects.filter(pk=item).update(created_at=now_minus(60))
    for _ in range(2):
        SupervisorLease.objects.update(expires_at=now_minus(1))
        supervisor_tick()
    escalation = Escalation.objects.get(problem="no_capable_agent")
    assert escalation.subject == "work_type:demo.noop"
    assert escalation.evidence["requirements"] == ["gpu", "mem_gb=16"]
    # An agent with too little memory does not qualify; one with enough does.
    Agent.objects.filter(pk=plain.pk).update(capabilities=["gpu", "mem_gb=8"])
    assert services.work_items_release() == 0
    big = agent_create("big", pid=4343)
    Agent.objects.filter(pk=big.pk).update(capabilities=["gpu", "mem_gb=32"])
    assert services.work_items_release() == 1


def test_capable_agents_share_the_items_by_free_processes():
    agents = CapableAgents([("a@h", ["gpu"], 1), ("b@h", ["gpu", "ssd"], 3), ("c@h", [], 8)])
    picks = [agents.pick("gpu") for _ in range(8)]
    assert picks.count("a@h") == 2 and picks.count("b@h") == 6
    assert agents.pick("ssd") == "b@h"
    assert agents.pick("tpu") == ""


@pytest.mark.parametrize(
    "requirements", [["gpu", 3], "gpu;rm -rf", ["="], [""], {"gpu": True}, ["mem_gb=16=2"], ["x" * 61]]
)
def test_bad_requirements_are_rejected_and_create_nothing(requirements):
    with pytest.raises(ValidationError):
        submit(requirements=requirements)
    assert not WorkItem.objects.exists()


def test_blocked_reasons_cover_dependencies_time_and_window():
    agent_create()  # window 4
    request = services.request_submit(
        spec={
            "items": [
                {"key": "a", "work_type": "demo.noop"},
                {"key": "b", "work_type": "demo.noop", "depends_on": ["a"]},
            ]
        }
    )
    (later,) = submit(not_before=timezone.now() + timedelta(hours=1))
    submit(6)
    services.work_items_release()
    facts = BlockingFacts()
    reasons = {item.pk: facts.item_reason(item) for item in WorkItem.objects.filter(status="pending")}
    child = request.items.get(request_key="b")
    assert reasons.pop(child.pk) == "dependencies"
    assert reasons.pop(later) == "not_before"
    assert set(reasons.values()) == {"queue_full"}
    counts = pending_reason_counts()["default"]
    assert counts == {"dependencies": 1, "not_before": 1, "queue_full": 3}
    out = StringIO()
    call_command("status", stdout=out)
    assert "queue_full 3" in out.getvalue() and "dependencies 1" in out.getvalue()


def test_release_writes_one_event_per_item_and_advances_the_fair_clock():
    ids = submit(3)
    services.work_items_release()
    assert WorkItemEvent.objects.filter(work_item_id__in=ids, to_status="queued").count() == 2
    released = WorkItem.objects.filter(status="queued").values_list("fair_seq", flat=True)
    assert Queue.objects.get(name="default").virtual_clock == max(released)


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the refill is part of PostgreSQL's one-statement finish"
)


def _in_flight() -> set[int]:
    return set(WorkItem.objects.filter(status__in=["queued", "running"]).values_list("id", flat=True))


def _finish(pk: int, agent: Agent) -> None:
    item = WorkItem.objects.get(pk=pk)
    claimed = services.work_item_claim(
        work_item_id=pk,
        attempt=item.attempt,
        agent_id=agent.pk,
        agent_name=agent.name,
        worker_pid=99999,
        task_id=item.celery_task_id,
    )
    assert claimed is not None and claimed.queue == "default"
    assert services.work_item_succeed(
        work_item_id=pk, attempt=item.attempt, actor="test", result=None, queue=claimed.queue
    )


@postgres_only
def test_a_finish_releases_the_next_item_in_order_into_the_slot_it_frees():
    agent = agent_create()  # capacity 2 -> window 4
    ids = []
    for n in range(8):
        ids += submit(priority=(n * 3) % 10)
    priority = dict(WorkItem.objects.values_list("id", "priority"))
    order = sorted(ids, key=lambda pk: (-priority[pk], pk))
    services.work_items_release()
    assert _in_flight() == set(order[:4])
    # Each finish moves exactly the next item in release order to queued, with its
    # event, in the finishing statement: the window stays at 4.
    for done, pk in enumerate(order[:3]):
        _finish(pk, agent)
        expected_next = order[4 + done]
        assert _in_flight() == set(order[done + 1 : 5 + done])
        assert WorkItemEvent.objects.filter(
            work_item_id=expected_next, to_status="queued", actor="scheduler", reason="released into queue default"
        ).exists()
        assert WorkItem.objects.get(pk=expected_next).attempt == 1
    assert Queue.objects.get(name="default").virtual_clock >= WorkItem.objects.get(pk=order[6]).fair_seq


@postgres_only
@pytest.mark.parametrize("hold", ["queue_paused", "type_limited", "window_shrunk", "capability_item_ahead"])
def test_a_finish_does_not_refill_what_only_the_counted_release_may_release(hold, settings):
    agent = agent_create()
    ids = submit(6)
    services.work_items_release()
    assert _in_flight() == set(ids[:4])
    if hold == "queue_paused":
        services.queue_pause(name="default")
    elif hold == "type_limited":  # a concurrency limit anywhere: the general release decides
        WorkType.objects.filter(name="demo.sleep").update(max_concurrency=10)
    elif hold == "window_shrunk":
        settings.SHEPHERD_QUEUE_WINDOW_PER_PROCESS = 1  # window 2, and 3 others are in flight
    else:
        submit(work_type="demo.noop", requirements="gpu", priority=9)
    _finish(ids[0], agent)
    assert _in_flight() == set(ids[1:4])
    assert WorkItem.objects.get(pk=ids[4]).status == "pending"
