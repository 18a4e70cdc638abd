"""Kill real processes and count items: 0 lost, 0 completed twice.

Each scenario appends a line to var/test/chaos-results.jsonl (scenario, items,
lost, completed twice, attempts, slowest recovery); conftest prints the table.
"Recovery" is from the dead agent's last heartbeat to the supervisor failing its
items' attempts for a retry; running again also waits for a free process.
"""

import json
import os
import signal

import pytest
from django.conf import settings
from django.db.models import Count, Max, Q

from agents.models import Agent
from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkItemEvent
from supervision.models import Intervention
from tests.conftest import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


def tally(ids):
    """Counts from the database: states, completions per item, attempts."""
    items = WorkItem.objects.filter(pk__in=ids)
    completions = dict(
        items.annotate(n=Count("attempts", filter=Q(attempts__outcome="succeeded"))).values_list("id", "n")
    )
    success_events = dict(
        items.annotate(
            n=Count("events", filter=Q(events__kind="transition", events__to_status="succeeded"))
        ).values_list("id", "n")
    )
    return {
        "items": len(ids),
        "succeeded": items.filter(status="succeeded").count(),
        "lost": len(ids) - items.filter(status__in=["succeeded", "dead", "cancelled"]).count(),
        "completed_twice": sum(1 for n in completions.values() if n > 1)
        + sum(1 for n in success_events.values() if n > 1),
        "attempts": items.aggregate(n=Count("attempts"))["n"],
        "max_attempts_per_item": items.aggregate(m=Max("attempt"))["m"],
        "rejected_late_finishes": WorkItemEvent.objects.filter(work_item__in=ids, kind="finish_rejected").count(),
    }


def record(scenario, counts, recovery=None):
    line = {"scenario": scenario, **counts, "slowest_recovery_s": recovery}
    path = settings.VAR_DIR / "chaos-results.jsonl"
    with open(path, "a") as out:
        out.write(json.dumps({**line, "backend": os.environ.get("SHEPHERD_TEST_BACKEND", "embedded")}) + "\n")
    print(line)


def finished(ids):
    return not WorkItem.objects.filter(pk__in=ids).exclude(status__in=["succeeded", "dead", "cancelled"]).exists()


def test_sigkill_agent_main_process_while_20_items_run(platform):
    victim = platform.start_worker("victim", queues="default", concurrency=4)
    platform.start_worker("survivor", queues="default", concurrency=4)
    platform.start_supervisor_loop()
    victim_agent = platform.agent_for(victim)
    ids = [i.pk for i in services.work_items_submit(work_type="demo.sleep", payloads=[{"seconds": 3}] * 20)]
    wait_until(
        lambda: WorkItem.objects.filter(pk__in=ids, status="running", agent=victim_agent).count() >= 3,
        timeout=60,
        what="the victim to run items",
        logs=platform,
    )
    held = list(WorkItem.objects.filter(pk__in=ids, status="running", agent=victim_agent).values_list("id", flat=True))
    victim.signal(signal.SIGKILL)  # the main process only: its pool children are orphaned

    wait_until(lambda: finished(ids), timeout=150, what="every item to finish", logs=platform)
    counts = tally(ids)
    assert counts["succeeded"] == 20 and counts["lost"] == 0 and counts["completed_twice"] == 0, counts

    victim_agent.refresh_from_db()
    assert victim_agent.status == "lost"
    assert Intervention.objects.filter(action="mark_agent_lost", agent=victim_agent).count() == 1
    # Recovery, from DB timestamps, measured from the victim's last beat: when the
    # supervisor failed each held attempt for a retry (its Intervention row), and when
    # the item ran again (that also waits for a window slot on the busy survivor).
    beat = victim_agent.last_heartbeat_at
    retried = Intervention.objects.filter(work_item__in=held, action="retry").values_list("at", flat=True)
    requeue_s = max(((t - beat).total_seconds() for t in retried), default=None)
    restarts = Attempt.objects.filter(work_item__in=held, number__gt=1).values_list("started_at", flat=True)
    running_s = max(((t - beat).total_seconds() for t in restarts), default=None)
    record("sigkill agent main (20 items)", {**counts, "slowest_running_again_s": running_s}, requeue_s)
    if os.environ.get("CHAOS_TIMELINE"):
        for event in WorkItemEvent.objects.filter(work_item__in=ids).order_by("at"):
            print(
                f"{(event.at - beat).total_seconds():7.2f}s #{event.work_item_id} a{event.attempt} "
                f"{event.from_status}->{event.to_status} {event.kind} {event.actor} {event.reason[:60]}"
            )
    if requeue_s is not None:  # None: the orphaned children finished before the supervisor noticed
        assert requeue_s < settings.AGENT_DEAD_AFTER + settings.SUPERVISOR_INTERVAL_SECONDS + 5


def test_sigkill_pool_child_item_is_retried_and_succeeds(platform):
    platform.start_worker("child", queues="default", concurrency=2)
    item = services.work_item_submit(work_type="demo.sleep", payload={"seconds": 3})
    attempt = wait_until(
        lambda: Attempt.objects.filter(work_item=item, number=1).first(), timeout=30, what="attempt 1", logs=platform
    )
    os.kill(attempt.worker_pid, signal.SIGKILL)

    wait_until(lambda: finished([item.pk]), timeout=60, what="item to finish", logs=platform)
    counts = tally([item.pk])
    assert WorkItem.objects.get(pk=item.pk).status == "succeeded"
    outcomes = list(Attempt.objects.filter(work_item=item).values_list("number", "outcome"))
    assert outcomes == [(1, "lost"), (2, "succeeded")]
    assert counts["completed_twice"] == 0
    record("sigkill pool child", counts)


def test_poison_item_is_dead_lettered_with_attempts_left_and_the_agent_keeps_serving(platform, settings):
    worker = platform.start_worker("poison", queues="default", concurrency=2)
    agent = platform.agent_for(worker)
    platform.start_supervisor_loop()
    poison = services.work_item_submit(work_type="demo.crash")
    WorkItem.objects.filter(pk=poison.pk).update(max_attempts=6)
    wait_until(lambda: finished([poison.pk]), timeout=120, what="poison item to end", logs=platform)
    poison.refresh_from_db()
    # The violation monitor dead-letters it once its process was lost
    # SHEPHERD_POISON_AFTER_LOST times, long before its attempts run out. A third
    # attempt may start while the tick is still coming round, never more.
    assert poison.status == "dead" and poison.error.startswith("poison"), poison.error
    attempts = Attempt.objects.filter(work_item=poison)
    assert settings.SHEPHERD_POISON_AFTER_LOST <= attempts.count() <= settings.SHEPHERD_POISON_AFTER_LOST + 1 < 6
    # Each attempt is failed either by the agent when Celery redelivers the message of
    # the dead pool process ("lost"), or by the lease monitor if that is quicker.
    assert set(attempts.values_list("outcome", flat=True)) <= {"lost", "timed_out"}
    assert Intervention.objects.filter(work_item=poison, rule="poison", action="dead_letter").count() == 1

    healthy = [i.pk for i in services.work_items_submit(work_type="demo.noop", payloads=[{}] * 5)]
    wait_until(lambda: finished(healthy), timeout=60, what="healthy items after the poison", logs=platform)
    assert WorkItem.objects.filter(pk__in=healthy, status="succeeded").count() == 5
    assert worker.alive() and Agent.objects.get(pk=agent.pk).status == "online"
    assert set(Attempt.objects.filter(work_item__in=healthy).values_list("agent_id", flat=True)) == {agent.pk}
    record("poison item (demo.crash)", tally([poison.pk, *healthy]))


def test_sigstop_agent_past_its_lease_then_sigcont_late_finish_is_rejected(platform):
    first = platform.start_worker("stop-a", queues="default", concurrency=2)
    second = platform.start_worker("stop-b", queues="default", concurrency=2)
    platform.start_supervisor_loop()
    agents = {platform.agent_for(first).pk: first, platform.agent_for(second).pk: second}
    item = services.work_item_submit(work_type="demo.sleep", payload={"seconds": 2})
    running = wait_until(
        lambda: WorkItem.objects.filter(pk=item.pk, status="running").values("agent_id").first(),
        timeout=30,
        what="item running",
        logs=platform,
    )
    stopped = agents[running["agent_id"]]
    stopped.signal(signal.SIGSTOP, group=True)  # main process and pool children freeze

    wait_until(lambda: finished([item.pk]), timeout=60, what="item finished elsewhere", logs=platform)
    assert WorkItem.objects.get(pk=item.pk).status == "succeeded"
    stopped.signal(signal.SIGCONT, group=True)
    wait_until(
        lambda: WorkItemEvent.objects.filter(work_item=item, kind="finish_rejected", attempt=1).exists(),
        timeout=30,
        what="the late finish of attempt 1 to be rejected",
        logs=platform,
    )
    counts = tally([item.pk])
    assert counts["completed_twice"] == 0 and counts["rejected_late_finishes"] == 1
    first_attempt = Attempt.objects.get(work_item=item, number=1)
    assert first_attempt.outcome == "lost" and first_attempt.late_outcome in ("succeeded", "stopped")
    assert Attempt.objects.get(work_item=item, number=2).outcome == "succeeded"
    # The thawed agent beats again and is back online.
    wait_until(
        lambda: Agent.objects.get(pk=running["agent_id"]).status == "online", timeout=20, what="agent back online"
    )
    record("sigstop agent past lease, sigcont", counts)
