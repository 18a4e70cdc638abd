"""Monitors: reads that return findings. They decide nothing and write nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Max
from django.db.models.functions import Now

from agents.models import LIVE_AGENT_STATUSES, Agent, AgentStatus
from agents.selectors import agents_capacity_by_queue
from project.dbclock import age_of, now_minus
from scheduling.models import WorkItem, WorkItemStatus

SCAN_LIMIT = 500  # per monitor per tick, so one tick stays short however much is wrong


@dataclass(frozen=True)
class Finding:
    monitor: str
    rule: str
    evidence: dict[str, Any] = field(default_factory=dict)
    work_item_id: int | None = None
    attempt: int | None = None
    agent_id: int | None = None


def _seconds(duration) -> float | None:
    return None if duration is None else round(duration.total_seconds(), 3)


def agents_stale(*, older_than: float) -> list[Finding]:
    """Live agents whose heartbeat is older than `older_than` seconds (DB clock)."""
    rows = (
        Agent.objects.filter(status__in=LIVE_AGENT_STATUSES, last_heartbeat_at__lt=now_minus(older_than))
        .annotate(age=age_of("last_heartbeat_at"))
        .values("id", "name", "pid", "age")[:SCAN_LIMIT]
    )
    return [
        Finding(
            monitor="health",
            rule="heartbeat_stale",
            agent_id=row["id"],
            evidence={
                "agent": row["name"],
                "pid": row["pid"],
                "heartbeat_age_s": _seconds(row["age"]),
                "dead_after_s": older_than,
            },
        )
        for row in rows
    ]


def work_items_orphaned() -> list[Finding]:
    """Running items whose agent is lost or went offline while holding them."""
    rows = WorkItem.objects.filter(
        status=WorkItemStatus.RUNNING, agent__status__in=[AgentStatus.LOST, AgentStatus.OFFLINE]
    ).values("id", "attempt", "agent_id", "agent__name", "agent__status")[:SCAN_LIMIT]
    return [
        Finding(
            monitor="health",
            rule="agent_lost",
            work_item_id=row["id"],
            attempt=row["attempt"],
            agent_id=row["agent_id"],
            evidence={"agent": row["agent__name"], "agent_status": row["agent__status"]},
        )
        for row in rows
    ]


def work_items_lease_expired() -> list[Finding]:
    """Running items whose lease lapsed while their agent still beats: a wedged process."""
    rows = (
        WorkItem.objects.filter(
            status=WorkItemStatus.RUNNING, lease_expires_at__lt=Now(), agent__status__in=LIVE_AGENT_STATUSES
        )
        .annotate(overdue=age_of("lease_expires_at"), since_beat=age_of("heartbeat_at"))
        .values("id", "attempt", "agent_id", "agent__name", "overdue", "since_beat")[:SCAN_LIMIT]
    )
    return [
        Finding(
            monitor="lease",
            rule="lease_expired",
            work_item_id=row["id"],
            attempt=row["attempt"],
            agent_id=row["agent_id"],
            evidence={
                "agent": row["agent__name"],
                "lease_overdue_s": _seconds(row["overdue"]),
                "item_heartbeat_age_s": _seconds(row["since_beat"]),
            },
        )
        for row in rows
    ]


def work_items_unclaimed(*, older_than: float) -> list[Finding]:
    """Queued items whose message looks lost: unclaimed for `older_than` seconds *and*
    either the queue's live agents have a free process, or an item dispatched later
    to the same queue is already running. An item merely waiting its turn behind
    busy agents is neither, so it is not published again."""
    candidates = list(
        WorkItem.objects.filter(status=WorkItemStatus.QUEUED, dispatched_at__lt=now_minus(older_than))
        .annotate(waiting=age_of("dispatched_at"))
        .order_by("dispatched_at")
        .values("id", "attempt", "queue", "dispatched_at", "waiting")[:SCAN_LIMIT]
    )
    if not candidates:
        return []
    queues = {row["queue"] for row in candidates}
    running = {
        row["queue"]: row
        for row in WorkItem.objects.filter(status=WorkItemStatus.RUNNING, queue__in=queues)
        .order_by()
        .values("queue")
        .annotate(n=Count("id"), newest=Max("dispatched_at"))
    }
    capacity = agents_capacity_by_queue(queues)
    findings = []
    for row in candidates:
        busy = running.get(row["queue"], {"n": 0, "newest": None})
        idle = capacity[row["queue"]] - busy["n"]
        overtaken = busy["newest"] is not None and busy["newest"] > row["dispatched_at"]
        if idle <= 0 and not overtaken:
            continue
        findings.append(
            Finding(
                monitor="dispatch",
                rule="unclaimed",
                work_item_id=row["id"],
                attempt=row["attempt"],
                evidence={
                    "queue": row["queue"],
                    "unclaimed_s": _seconds(row["waiting"]),
                    "redispatch_after_s": older_than,
                    "idle_processes": max(idle, 0),
                    "overtaken_by_later_item": overtaken,
                },
            )
        )
    return findings
