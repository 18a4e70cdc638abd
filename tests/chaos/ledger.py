"""Counting for chaos scenarios: items from the database, the results table, the scale.

Every scenario's pass mark is 0 lost and 0 completed twice, counted from
WorkItem, Attempt and WorkItemEvent rows. Each appends one line to
var/test/chaos-results.jsonl; tests/conftest.py prints the table at the end.

Scale: `make test` runs a short version of each scenario; CHAOS_FULL=1 (`make
chaos`) the issue's sizes (200 items, a 30 s broker outage). The clocks come from
the environment (project/settings_test.py shrinks them unless they are set), so
`make chaos CHAOS_CLOCKS=default` runs the same scenarios with the production
clocks; waits scale with AGENT_DEAD_AFTER through patience().
"""

from __future__ import annotations

import json
import os
from datetime import datetime

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Count, Max, Q

from scheduling.models import Attempt, WorkItem, WorkItemEvent

FULL = os.environ.get("CHAOS_FULL", "").lower() in {"1", "true", "yes"}
TERMINAL = ("succeeded", "dead", "cancelled")


def scale(short: int, full: int) -> int:
    return full if FULL else short


def patience(seconds: float) -> float:
    """A wait written for the test clocks (AGENT_DEAD_AFTER 4 s), stretched for slower ones."""
    return seconds * max(1.0, settings.AGENT_DEAD_AFTER / 4)


def recovery_bound() -> float:
    """The issue's promise: a dead agent's items run again within this (seconds)."""
    return settings.AGENT_DEAD_AFTER + settings.SUPERVISOR_INTERVAL_SECONDS + 2


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
        "lost": len(ids) - items.filter(status__in=TERMINAL).count(),
        "completed_twice": sum(1 for n in completions.values() if n > 1)
        + sum(1 for n in success_events.values() if n > 1),
        "attempts": items.aggregate(n=Count("attempts"))["n"],
        "max_attempts_per_item": items.aggregate(m=Max("attempt"))["m"],
        "rejected_late_finishes": WorkItemEvent.objects.filter(work_item__in=ids, kind="finish_rejected").count(),
    }


def assert_none_lost_or_twice(counts, *, succeeded: int | None = None) -> None:
    assert counts["lost"] == 0 and counts["completed_twice"] == 0, counts
    if succeeded is not None:
        assert counts["succeeded"] == succeeded, counts


def record(scenario, counts, recovery=None, **extra):
    """One row of the results table; `recovery` is the slowest, in seconds."""
    line = {"scenario": scenario, **counts, "slowest_recovery_s": recovery, **extra}
    if recovery is not None and "recovery_bound_s" not in extra:
        line["recovery_bound_s"] = recovery_bound()
    line["clocks"] = {
        "heartbeat": settings.AGENT_HEARTBEAT_SECONDS,
        "dead_after": settings.AGENT_DEAD_AFTER,
        "tick": settings.SUPERVISOR_INTERVAL_SECONDS,
        "lease": settings.WORK_ITEM_LEASE_SECONDS,
        "redispatch": settings.REDISPATCH_AFTER,
    }
    path = settings.VAR_DIR / "chaos-results.jsonl"
    with open(path, "a") as out:
        out.write(json.dumps({**line, "backend": os.environ.get("SHEPHERD_TEST_BACKEND", "embedded")}) + "\n")
    print(line)


def finished(ids):
    return not WorkItem.objects.filter(pk__in=ids).exclude(status__in=TERMINAL).exists()


def tolerant(predicate):
    """For waits that span a database outage: an error means "not yet"."""

    def check():
        try:
            return predicate()
        except (OperationalError, InterfaceError):
            connection.close()
            return None

    return check


def running_again_after(held: dict[int, int], fault_at: datetime) -> float | None:
    """Slowest time from the fault to a later attempt of each held item starting
    (DB timestamps). `held` maps item id -> the attempt it had at the fault. Items
    whose held attempt still finished (an orphaned pool child won the race) have no
    later attempt and do not count."""
    slowest = None
    for work_item_id, attempt in held.items():
        started = (
            Attempt.objects.filter(work_item_id=work_item_id, number__gt=attempt)
            .order_by("number")
            .values_list("started_at", flat=True)
            .first()
        )
        if started is not None:
            seconds = (started - fault_at).total_seconds()
            slowest = seconds if slowest is None else max(slowest, seconds)
    return slowest
