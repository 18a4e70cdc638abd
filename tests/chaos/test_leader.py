"""One leader, observable: two beats (each with its tick worker) and `supervise --loop`
run at once; exactly one acts per tick; SIGKILL the acting one and another takes over;
stop them all and `status` says the supervisor is silent."""

import itertools
import json
import signal
from collections import Counter

import pytest
from django.conf import settings
from django.db.models import Count

from agents.models import Agent
from project.dbclock import db_now, now_minus
from supervision.models import Intervention, SupervisorRun
from tests.chaos.ledger import assert_none_lost_or_twice, finished, patience, record, tally
from tests.conftest import wait_until
from tests.factories import agent_create, item_running

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(patience(300))]


def _pid(holder: str) -> int:
    return int(holder.split(":")[1])  # host:pid:token (supervision.services._holder_name)


def test_two_beats_and_a_loop_act_once_per_tick_and_another_takes_over(platform):
    interval = settings.SUPERVISOR_INTERVAL_SECONDS
    # Problems planted before any supervisor starts: each must be acted on exactly once.
    stale = [agent_create(f"stale-{n}") for n in range(5)]
    orphans = [item_running(agent).pk for agent in stale]
    Agent.objects.filter(pk__in=[a.pk for a in stale]).update(last_heartbeat_at=now_minus(60))
    platform.start_worker("runner", queues="default", concurrency=2)  # runs the retried orphans
    actors = [
        platform.start_worker(f"tick-{n}", queues="supervisor", concurrency=1, extra_args=["--pool", "solo"])
        for n in range(2)
    ]
    for n in range(2):
        platform.start_beat(f"beat-{n}")
    actors.append(platform.start_supervisor_loop())
    wait_until(lambda: SupervisorRun.objects.count() >= 10, timeout=patience(60), what="ten ticks", logs=platform)

    latest = SupervisorRun.objects.order_by("-started_at").first()
    victim = next(proc for proc in actors if proc.pid == _pid(latest.holder))
    killed_at = db_now()
    victim.signal(signal.SIGKILL)
    successor = wait_until(
        lambda: (
            SupervisorRun.objects.filter(started_at__gt=killed_at)
            .exclude(holder__contains=f":{victim.pid}:")
            .order_by("started_at")
            .first()
        ),
        timeout=patience(60),
        what="another supervisor to tick",
        logs=platform,
    )
    takeover_s = (successor.started_at - killed_at).total_seconds()
    wait_until(
        lambda: SupervisorRun.objects.filter(started_at__gt=successor.started_at).count() >= 5,
        timeout=patience(60),
        what="five more ticks",
        logs=platform,
    )
    wait_until(lambda: finished(orphans), timeout=patience(60), what="the orphans retried and done", logs=platform)

    # Exactly one acts per tick: runs never overlap (the next starts after the last finished;
    # a run the SIGKILL cut short ends at the kill).
    runs = list(SupervisorRun.objects.order_by("started_at").values("id", "holder", "started_at", "finished_at"))
    if runs[-1]["finished_at"] is None:
        runs.pop()  # still in progress: the supervisors are still running
    cut_short = [run["id"] for run in runs if run["finished_at"] is None]
    assert cut_short in ([], [latest.pk]), cut_short
    overlapping = [
        (a["id"], b["id"])
        for a, b in itertools.pairwise(runs)
        if not (a["finished_at"] or killed_at) <= b["started_at"]
    ]
    assert not overlapping, overlapping
    # ... and no problem was acted on twice.
    duplicates = (
        Intervention.objects.values("action", "work_item", "attempt", "agent").annotate(n=Count("id")).filter(n__gt=1)
    )
    assert not duplicates.exists(), list(duplicates)
    assert Intervention.objects.filter(action="mark_agent_lost", agent__in=stale).count() == len(stale)
    assert Intervention.objects.filter(action="retry", work_item__in=orphans).count() == len(orphans)
    counts = tally(orphans)
    assert_none_lost_or_twice(counts, succeeded=len(orphans))
    by_actor = Counter(_pid(run["holder"]) for run in runs)
    record(
        "two beats + supervise --loop, SIGKILL leader",
        counts,
        takeover_s,
        recovery_bound_s=2 * interval,
        runs=len(runs),
        runs_per_actor={proc.name: by_actor.get(proc.pid, 0) for proc in actors},
        killed=victim.name,
        killed_mid_tick=bool(cut_short),
        overlapping_runs=len(overlapping),
    )

    # Silence everyone: `status` warns once the last run is older than three intervals.
    for proc in platform.procs:
        proc.stop()
    status = wait_until(
        lambda: (lambda out: out if "SILENT for over three intervals" in out else None)(
            platform.manage("status").stdout
        ),
        timeout=patience(30),
        what="status to warn that the supervisor is silent",
    )
    assert "Supervisor: last run" in status
    assert json.loads(platform.manage("status", "--json").stdout)["supervisor"]["silent"] is True
