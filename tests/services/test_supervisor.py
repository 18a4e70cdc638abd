import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext

from agents.models import Agent
from project.dbclock import now_minus
from scheduling import services
from scheduling.models import Attempt, WorkItem
from supervision.models import Intervention, SupervisorLease, SupervisorRun
from supervision.services import (
    supervisor_lease_release,
    supervisor_lease_try_acquire,
    supervisor_schedule_ensure,
    supervisor_tick,
)
from tests.factories import agent_create, item_queued, item_running

pytestmark = pytest.mark.django_db


def lease_free():
    SupervisorLease.objects.update(expires_at=now_minus(1))


def test_stale_agent_is_lost_and_its_items_retry_at_once(settings):
    dead, alive = agent_create("dead"), agent_create("alive")
    orphan, healthy = item_running(dead), item_running(alive)
    Agent.objects.filter(pk=dead.pk).update(last_heartbeat_at=now_minus(settings.AGENT_DEAD_AFTER + 5))

    run = supervisor_tick()
    assert (run.findings, run.actions) == (2, 2)
    assert Agent.objects.get(pk=dead.pk).status == "lost"
    assert Agent.objects.get(pk=alive.pk).status == "online"
    orphan.refresh_from_db()
    assert (orphan.status, orphan.attempt) == ("queued", 2)  # retried at once and released in the same tick
    assert Attempt.objects.get(work_item=orphan, number=1).outcome == "lost"
    assert WorkItem.objects.get(pk=healthy.pk).status == "running"
    found = list(Intervention.objects.order_by("id").values_list("monitor", "rule", "action", "work_item_id"))
    assert found == [
        ("health", "heartbeat_stale", "mark_agent_lost", None),
        ("health", "agent_lost", "retry", orphan.pk),
    ]
    assert Intervention.objects.get(action="mark_agent_lost").evidence["heartbeat_age_s"] > settings.AGENT_DEAD_AFTER

    lease_free()
    again = supervisor_tick()
    assert again.actions == 0  # nothing left to do: no duplicate interventions
    assert Intervention.objects.count() == 2


def test_lost_agent_on_last_attempt_dead_letters():
    agent = agent_create()
    item = item_running(agent, "demo.sleep")
    WorkItem.objects.filter(pk=item.pk).update(max_attempts=1)
    Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=now_minus(100))
    supervisor_tick()
    item.refresh_from_db()
    assert item.status == "dead"
    assert Intervention.objects.filter(action="dead_letter", work_item=item).count() == 1


def test_expired_lease_on_a_live_agent_is_retried():
    agent = agent_create()
    item = item_running(agent)
    WorkItem.objects.filter(pk=item.pk).update(lease_expires_at=now_minus(1))
    run = supervisor_tick()
    assert run.actions == 1
    intervention = Intervention.objects.get()
    assert (intervention.monitor, intervention.rule, intervention.action) == ("lease", "lease_expired", "retry")
    assert Attempt.objects.get(work_item=item, number=1).outcome == "timed_out"


def test_unclaimed_item_is_published_again_when_an_agent_is_idle(settings):
    agent_create()  # two idle processes on the default queue
    item = item_queued()
    WorkItem.objects.filter(pk=item.pk).update(dispatched_at=now_minus(settings.REDISPATCH_AFTER + 1))
    supervisor_tick()
    intervention = Intervention.objects.get()
    assert (intervention.action, intervention.work_item_id, intervention.attempt) == ("redispatch", item.pk, 1)
    assert intervention.evidence["idle_processes"] == 2
    item.refresh_from_db()
    assert (item.status, item.attempt) == ("queued", 1)  # same attempt, fresh dispatch time


def test_unclaimed_item_waiting_its_turn_behind_busy_agents_is_left_alone(settings):
    agent = agent_create()
    busy = [item_running(agent), item_running(agent)]  # both processes busy
    waiting = item_queued()
    old = now_minus(settings.REDISPATCH_AFTER + 5)
    WorkItem.objects.filter(pk__in=[b.pk for b in busy]).update(dispatched_at=old)
    WorkItem.objects.filter(pk=waiting.pk).update(dispatched_at=now_minus(settings.REDISPATCH_AFTER + 1))
    supervisor_tick()
    assert not Intervention.objects.exists()


def test_unclaimed_item_overtaken_by_a_later_one_is_published_again(settings):
    agent = agent_create()
    lost = item_queued()
    later = [item_running(agent), item_running(agent)]  # dispatched after `lost`, already running
    WorkItem.objects.filter(pk=lost.pk).update(dispatched_at=now_minus(settings.REDISPATCH_AFTER + 5))
    WorkItem.objects.filter(pk__in=[x.pk for x in later]).update(dispatched_at=now_minus(settings.REDISPATCH_AFTER))
    supervisor_tick()
    intervention = Intervention.objects.get()
    assert (intervention.work_item_id, intervention.evidence["overtaken_by_later_item"]) == (lost.pk, True)


def test_one_leader_per_interval():
    assert supervisor_tick() is not None
    assert supervisor_tick() is None  # a second beat (or manual run) within the interval does nothing
    assert SupervisorRun.objects.count() == 1
    lease_free()
    assert supervisor_tick() is not None


def test_lease_acquire_is_exclusive_while_held():
    try:
        assert supervisor_lease_try_acquire(holder="a")
        assert not supervisor_lease_try_acquire(holder="b")
        SupervisorLease.objects.update(expires_at=Now())
        assert supervisor_lease_try_acquire(holder="b")
    finally:
        # Both acquisitions took PostgreSQL's session advisory lock on this test
        # process's connection; left held, no supervisor subprocess of a later test
        # in the session could ever lead.
        supervisor_lease_release(holder="a")
        supervisor_lease_release(holder="b")


def test_tick_releases_due_retries():
    agent = agent_create()
    item = item_running(agent)
    services.work_item_fail(work_item_id=item.pk, attempt=1, actor="t", error="x", retry_delay=0)
    run = supervisor_tick()
    assert run.released == 1
    assert WorkItem.objects.get(pk=item.pk).status == "queued"


def test_quiet_tick_queries_do_not_grow_with_finished_items():
    """A tick asks about what is live, never once per stored row. (This counts
    statements only; that each one reads an index, not the table, is measured at
    1,000,000 rows by bench B3.)"""

    def finished(n: int) -> None:
        ids = services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * n)
        WorkItem.objects.filter(pk__in=ids).update(status="succeeded", finished_at=Now())

    def tick_queries() -> int:
        lease_free()
        with CaptureQueriesContext(connection) as captured:
            run = supervisor_tick()
        assert run is not None and run.findings == 0
        return len(captured)

    tick_queries()  # the first tick also creates the lease row
    finished(3)
    few = tick_queries()
    finished(30)
    assert tick_queries() == few


def test_schedule_is_created_idempotently():
    from django_celery_beat.models import PeriodicTask

    first = supervisor_schedule_ensure()
    second = supervisor_schedule_ensure()
    assert first.pk == second.pk
    assert PeriodicTask.objects.filter(task="shepherd.supervisor.tick").count() == 1
    assert (second.queue, second.interval.every, second.enabled) == ("supervisor", 1, True)
