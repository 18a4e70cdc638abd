"""Kill real processes and count items: 0 lost, 0 completed twice.

Each scenario appends a line to var/test/chaos-results.jsonl (tests/chaos/ledger.py);
conftest prints the table. "Recovery" is from the fault (the database clock just
before the signal) to each of the dead agent's items running again (the start of
its next attempt, which also waits for a free process).
"""

import os
import signal

import pytest

from agents.models import Agent
from project.dbclock import db_now
from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkItemEvent
from supervision.models import Intervention
from tests.chaos.ledger import (
    assert_none_lost_or_twice,
    finished,
    patience,
    record,
    running_again_after,
    scale,
    tally,
)
from tests.conftest import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(patience(300))]


def _busiest(platform, workers):
    """The live worker holding the most running items: (proc, agent, {item: attempt})."""
    best = None
    for proc in workers:
        agent = platform.agent_for(proc)
        held = dict(WorkItem.objects.filter(status="running", agent=agent).values_list("id", "attempt"))
        if held and (best is None or len(held) > len(best[2])):
            best = (proc, agent, held)
    return best


def test_sigkill_agents_repeatedly_while_items_run(platform):
    """Kill the busiest agent again and again, alternating a crash of its main
    process alone (pool children orphaned, finishing late) with its whole process
    group; start a replacement each time."""
    size, kills = scale(40, 200), scale(2, 6)
    workers = [platform.start_worker(f"kill-{n}", queues="default", concurrency=4) for n in range(2)]
    platform.start_supervisor_loop()
    ids = [i.pk for i in services.work_items_submit(work_type="demo.sleep", payloads=[{"seconds": 2}] * size)]
    victims = []
    for round_ in range(kills):
        proc, agent, held = wait_until(
            lambda: _busiest(platform, workers), timeout=patience(60), what="an agent running items", logs=platform
        )
        fault_at = db_now()
        proc.signal(signal.SIGKILL, group=bool(round_ % 2))
        victims.append((agent, held, fault_at))
        workers.remove(proc)
        workers.append(platform.start_worker(f"kill-r{round_}", queues="default", concurrency=4))

    wait_until(lambda: finished(ids), timeout=patience(240), what="every item to finish", logs=platform)
    counts = tally(ids)
    assert_none_lost_or_twice(counts, succeeded=size)
    for agent, _held, _at in victims:
        assert Agent.objects.get(pk=agent.pk).status == "lost"
        assert Intervention.objects.filter(action="mark_agent_lost", agent=agent).count() == 1
    held_all = {pk: attempt for _agent, held, _at in victims for pk, attempt in held.items()}
    # No item got more than one retry Intervention for the same attempt.
    retries = Intervention.objects.filter(work_item__in=held_all, action="retry")
    assert retries.count() == retries.values("work_item", "attempt").distinct().count()
    recoveries = [running_again_after(held, at) for _agent, held, at in victims]
    measured = [r for r in recoveries if r is not None]
    # The supervisor's own part: fault -> the held attempt failed for a retry.
    requeued = [
        (at_ - fault_at).total_seconds()
        for _agent, held, fault_at in victims
        for at_ in Intervention.objects.filter(work_item__in=held, action="retry").values_list("at", flat=True)
    ]
    record(
        f"sigkill agents x{kills} ({size} items)",
        counts,
        max(measured, default=None),
        slowest_requeued_s=max(requeued, default=None),
        kills=kills,
        held_at_kills=len(held_all),
        recoveries_s=[None if r is None else round(r, 2) for r in recoveries],
    )
    if os.environ.get("CHAOS_TIMELINE"):
        first = victims[0][2]
        for event in WorkItemEvent.objects.filter(work_item__in=held_all).order_by("at"):
            print(
                f"{(event.at - first).total_seconds():7.2f}s #{event.work_item_id} a{event.attempt} "
                f"{event.from_status}->{event.to_status} {event.kind} {event.actor} {event.reason[:60]}"
            )


def test_sigkill_pool_child_item_is_retried_and_succeeds(platform):
    platform.start_worker("child", queues="default", concurrency=2)
    item = services.work_item_submit(work_type="demo.sleep", payload={"seconds": 3})
    attempt = wait_until(
        lambda: Attempt.objects.filter(work_item=item, number=1).first(), timeout=30, what="attempt 1", logs=platform
    )
    os.kill(attempt.worker_pid, signal.SIGKILL)

    wait_until(lambda: finished([item.pk]), timeout=patience(60), what="item to finish", logs=platform)
    counts = tally([item.pk])
    assert_none_lost_or_twice(counts, succeeded=1)
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
        timeout=patience(30),
        what="item running",
        logs=platform,
    )
    stopped = agents[running["agent_id"]]
    stopped.signal(signal.SIGSTOP, group=True)  # main process and pool children freeze

    wait_until(lambda: finished([item.pk]), timeout=patience(60), what="item finished elsewhere", logs=platform)
    assert WorkItem.objects.get(pk=item.pk).status == "succeeded"
    stopped.signal(signal.SIGCONT, group=True)
    wait_until(
        lambda: WorkItemEvent.objects.filter(work_item=item, kind="finish_rejected", attempt=1).exists(),
        timeout=patience(30),
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
        lambda: Agent.objects.get(pk=running["agent_id"]).status == "online",
        timeout=patience(20),
        what="agent back online",
    )
    record("sigstop agent past lease, sigcont", counts)


def test_cancel_queued_and_running_items_then_restart_every_worker(platform, settings):
    """Cancel items whose messages sit in the broker and items that run, then restart
    every worker: no cancelled item ever starts again (Attempt rows and events)."""
    n_running, n_queued = scale(4, 20), scale(20, 100)
    per_worker = n_running // 2
    # A window wide enough that every queued item's message is really in the broker.
    window = {"SHEPHERD_QUEUE_WINDOW_PER_PROCESS": str(n_queued + n_running)}
    platform.env.update(window)
    settings.SHEPHERD_QUEUE_WINDOW_PER_PROCESS = n_queued + n_running  # releases from this process
    workers = [platform.start_worker(f"cancel-{n}", queues="default", concurrency=per_worker) for n in range(2)]
    platform.start_supervisor_loop()
    running = [
        i.pk for i in services.work_items_submit(work_type="demo.sleep", payloads=[{"seconds": 600}] * n_running)
    ]
    wait_until(
        lambda: WorkItem.objects.filter(pk__in=running, status="running").count() == n_running,
        timeout=patience(60),
        what="every long item running",
        logs=platform,
    )
    queued = [i.pk for i in services.work_items_submit(work_type="demo.noop", payloads=[{}] * n_queued)]
    wait_until(
        lambda: WorkItem.objects.filter(pk__in=queued, status="queued").count() == n_queued,
        timeout=patience(30),
        what="every short item published",
        logs=platform,
    )
    # Queued first: cancelling a running item frees its process, which would claim the next queued one.
    cancelled = queued + running
    result = platform.manage("cancel", *map(str, cancelled))
    assert result.returncode == 0, result.stderr
    cancel_at = max(
        WorkItemEvent.objects.filter(work_item__in=cancelled, to_status="cancelled").values_list("at", flat=True)
    )

    for proc in list(workers):
        proc.stop()  # warm shutdown: unacknowledged messages go back to the queue
        workers.append(platform.start_worker(f"{proc.name}-again", queues="default", concurrency=per_worker))
    probes = [i.pk for i in services.work_items_submit(work_type="demo.noop", payloads=[{}] * 5)]
    wait_until(lambda: finished(probes), timeout=patience(60), what="probes after the restart", logs=platform)

    counts = tally(cancelled)
    assert WorkItem.objects.filter(pk__in=cancelled, status="cancelled").count() == len(cancelled)
    assert not Attempt.objects.filter(work_item__in=queued).exists()
    assert sorted(Attempt.objects.filter(work_item__in=running).values_list("work_item_id", "number", "outcome")) == [
        (pk, 1, "cancelled") for pk in sorted(running)
    ]
    assert not Attempt.objects.filter(work_item__in=cancelled, started_at__gte=cancel_at).exists()
    assert not WorkItemEvent.objects.filter(work_item__in=cancelled, at__gt=cancel_at, kind="transition").exists()
    assert_none_lost_or_twice(counts)
    # Evidence that the restarted workers were handed the cancelled items' messages
    # and refused them (their claim checks the database); informative, not asserted.
    refused = sum(proc.log().count("'not_claimed'") for proc in workers)
    record(f"cancel {n_queued} queued + {n_running} running, restart all", counts, refused_claims=refused)
