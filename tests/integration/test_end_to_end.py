"""Real celery worker, beat and manage.py processes against the test database and broker."""

import signal
import sys
import time

import pytest
from django.db.models import Count

from agents.models import Agent
from project.dbclock import now_minus
from scheduling import services
from scheduling.models import Attempt, WorkItem, WorkItemEvent
from supervision.models import SupervisorRun
from tests.conftest import wait_until
from tests.factories import agent_create, item_running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def statuses(ids):
    return dict(WorkItem.objects.filter(pk__in=ids).values_list("id", "status"))


def all_in(ids, *wanted):
    current = statuses(ids)
    return len(current) == len(ids) and all(s in wanted for s in current.values()) and current


def test_work_flows_through_real_agents_and_queues(platform):
    worker = platform.start_worker("e2e", queues="default,cpu", concurrency=2)
    platform.start_supervisor_loop()  # promotes the demo.fail retry when its backoff is due
    ids = [i.pk for i in services.work_items_submit(work_type="demo.sleep", payloads=[{"seconds": 0.2}] * 6)]
    ids += [services.work_item_submit(work_type="demo.cpu", payload={"n": 200_000}).pk]
    fail_id = services.work_item_submit(work_type="demo.fail", payload={"times": 1}).pk
    progress_id = services.work_item_submit(work_type="demo.progress", payload={"steps": 3, "step_seconds": 0.1}).pk
    ids += [fail_id, progress_id]

    wait_until(lambda: all_in(ids, "succeeded"), timeout=90, what="every item to succeed", logs=platform)

    agent = platform.agent_for(worker)
    assert (agent.status, sorted(agent.queues), agent.concurrency) == ("online", ["cpu", "default"], 2)
    attempts = dict(WorkItem.objects.filter(pk__in=ids).values_list("id", "attempt"))
    assert attempts[fail_id] == 2 and all(n == 1 for pk, n in attempts.items() if pk != fail_id)
    assert WorkItem.objects.get(pk=ids[6]).result == {"n": 200_000, "primes": 17984}
    progress = WorkItem.objects.get(pk=progress_id)
    assert (progress.progress, progress.result) == (1.0, {"steps": 3})
    assert set(Attempt.objects.filter(work_item__in=ids).values_list("agent_id", flat=True)) == {agent.pk}

    worker.stop()  # warm shutdown: draining, then offline
    assert Agent.objects.get(pk=agent.pk).status == "offline"


def test_beat_schedules_the_supervisor_tick(platform):
    platform.start_worker("supervisor", queues="supervisor", concurrency=1, extra_args=["--pool", "solo"])
    stale = agent_create("stale-agent")
    orphan = item_running(stale)
    Agent.objects.filter(pk=stale.pk).update(last_heartbeat_at=now_minus(60))
    platform.start_beat()

    wait_until(lambda: SupervisorRun.objects.count() >= 3, timeout=60, what="three ticks from beat", logs=platform)
    wait_until(lambda: Agent.objects.get(pk=stale.pk).status == "lost", timeout=10, what="stale agent lost")
    assert WorkItem.objects.get(pk=orphan.pk).attempt == 2
    # The tick worker consumes no work queue, so it is not an agent.
    assert not Agent.objects.filter(name__startswith="supervisor@").exists()


def test_cancelled_queued_items_never_run_even_after_every_worker_restarts(platform, settings):
    settings.SHEPHERD_QUEUE_WINDOW_PER_PROCESS = 10  # publish all six before any agent exists
    ids = [i.pk for i in services.work_items_submit(work_type="demo.sleep", payloads=[{"seconds": 0.1}] * 6)]
    wait_until(lambda: all_in(ids, "queued"), timeout=10, what="items published")
    cancelled, kept = ids[:4], ids[4:]
    result = platform.manage("cancel", *map(str, cancelled))
    assert result.returncode == 0, result.stderr

    worker = platform.start_worker("restart-1", concurrency=2)
    wait_until(lambda: all_in(kept, "succeeded"), timeout=60, what="kept items to succeed", logs=platform)
    worker.stop()
    worker = platform.start_worker("restart-2", concurrency=2)
    probe = services.work_item_submit(work_type="demo.noop").pk  # proves the restarted worker consumes
    wait_until(lambda: all_in([probe], "succeeded"), timeout=60, what="probe to succeed", logs=platform)

    assert all_in(cancelled, "cancelled")
    assert not Attempt.objects.filter(work_item__in=cancelled).exists()


def test_cancelling_a_running_item_stops_it(platform, settings):
    platform.start_worker("cancel", concurrency=1)
    long_item = services.work_item_submit(work_type="demo.sleep", payload={"seconds": 120})
    wait_until(lambda: all_in([long_item.pk], "running"), timeout=30, what="item running", logs=platform)

    result = platform.manage("cancel", str(long_item.pk))
    assert result.returncode == 0 and f"cancelled #{long_item.pk}" in result.stdout
    # The only pool process was busy; the next item can start only once the cancelled one stopped.
    probe = services.work_item_submit(work_type="demo.noop")
    wait_until(lambda: all_in([probe.pk], "succeeded"), timeout=30, what="probe after cancel", logs=platform)

    cancelled_at = WorkItemEvent.objects.get(work_item=long_item, kind="transition", to_status="cancelled").at
    probe_started = Attempt.objects.get(work_item=probe).started_at
    stop_seconds = (probe_started - cancelled_at).total_seconds()
    print(f"cancel -> slot free: {stop_seconds:.2f}s")
    # DESIGN: stopped within two heartbeat intervals; slack covers respawning a pool process.
    assert stop_seconds < 2 * settings.AGENT_HEARTBEAT_SECONDS + 5
    assert Attempt.objects.get(work_item=long_item).outcome == "cancelled"
    assert WorkItem.objects.get(pk=long_item.pk).status == "cancelled"


def test_commands_exit_codes_and_messages(platform):
    bad = [
        (["submit", "demo.nope"], "unknown work type 'demo.nope'"),
        (["submit", "demo.sleep", "--payload", "{nope"], "--payload is not valid JSON"),
        (["submit", "demo.sleep", "--payload", '{"seconds": -3}'], "payload.seconds: -3 is less than the minimum"),
        (["submit", "demo.sleep", "--priority", "10"], "priority must be an integer from 0 to 9"),
        (["cancel", "987654"], "no work item with id 987654"),
        (["requeue", "987654"], "no work item with id 987654"),
    ]
    for args, message in bad:
        result = platform.manage(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert WorkItem.objects.count() == 0

    ok = platform.manage("submit", "demo.noop", "--count", "2", "--json")
    assert ok.returncode == 0, ok.stderr
    timeout = platform.manage("wait", "--timeout", "0.5")
    assert timeout.returncode == 1 and "timed out" in timeout.stderr
    status = platform.manage("status", "--json")
    assert status.returncode == 0 and '"pending"' in status.stdout
    assert WorkItem.objects.aggregate(n=Count("id"))["n"] == 2


def test_signal_to_a_real_worker_marks_the_agent_draining_then_offline(platform):
    worker = platform.start_worker("drain", concurrency=1)
    agent = platform.agent_for(worker)
    busy = services.work_item_submit(work_type="demo.sleep", payload={"seconds": 2})
    wait_until(lambda: all_in([busy.pk], "running"), timeout=30, what="item running", logs=platform)
    worker.signal(signal.SIGTERM)  # warm shutdown: finish current work, take no more
    wait_until(
        lambda: Agent.objects.get(pk=agent.pk).status in ("draining", "offline"), timeout=10, what="agent draining"
    )
    worker.popen.wait(timeout=30)
    assert Agent.objects.get(pk=agent.pk).status == "offline"
    assert WorkItem.objects.get(pk=busy.pk).status == "succeeded"  # it finished its item first
    assert sys.executable  # (the worker ran under this interpreter's venv)
    time.sleep(0)
