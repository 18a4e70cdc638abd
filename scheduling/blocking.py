"""Why a pending item waits: its blocked_reason, derived from the state that holds it back.

Only `dependencies` is stored on the row (it changes when a parent finishes); the
others follow from state that changes every second (the clock, pauses, agents,
limits, the window), so they are derived when someone looks, in the order the
release applies them. One BlockingFacts per page or command: a handful of queries,
however many items are shown.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db.models import Count, Q

from project.dbclock import db_now
from scheduling.models import IN_FLIGHT_STATUSES, Queue, WorkItem, WorkItemStatus, WorkType

DEPENDENCIES = "dependencies"
NOT_BEFORE = "not_before"
PAUSED = "paused"
NO_CAPABLE_AGENT = "no_capable_agent"
CONCURRENCY_LIMIT = "concurrency_limit"
RATE_LIMITED = "rate_limited"
QUEUE_FULL = "queue_full"
READY = "ready"  # nothing holds it: the next release takes it
BLOCKED_REASONS = (
    DEPENDENCIES,
    NOT_BEFORE,
    PAUSED,
    NO_CAPABLE_AGENT,
    CONCURRENCY_LIMIT,
    RATE_LIMITED,
    QUEUE_FULL,
    READY,
)
EXPLANATIONS = {
    DEPENDENCIES: "waits for the items it depends on to succeed",
    NOT_BEFORE: "waits for its not_before time",
    PAUSED: "its queue or work type is paused",
    NO_CAPABLE_AGENT: "no online agent of its queue has the capabilities it needs",
    CONCURRENCY_LIMIT: "its work type has as many items in flight as its concurrency limit allows",
    RATE_LIMITED: "its work type's rate limit has no start slot free yet",
    QUEUE_FULL: "its queue's broker window is full; it goes when an item finishes",
    READY: "nothing holds it back: the next release takes it",
}


class BlockingFacts:
    """The state blocked reasons are derived from, each part read once and only if needed."""

    @cached_property
    def now(self) -> datetime:
        return db_now()

    @cached_property
    def paused_queues(self) -> set[str]:
        return set(Queue.objects.filter(paused=True).values_list("name", flat=True))

    @cached_property
    def types(self) -> dict[str, dict[str, Any]]:
        return {
            row["name"]: row
            for row in WorkType.objects.values("name", "paused", "max_concurrency", "rate_limit", "rate_next_slot")
        }

    @cached_property
    def in_flight(self) -> tuple[dict[str, int], dict[str, int]]:
        by_queue: dict[str, int] = {}
        by_type: dict[str, int] = {}
        rows = (
            WorkItem.objects.filter(status__in=IN_FLIGHT_STATUSES)
            .order_by()
            .values("queue", "work_type_id")
            .annotate(n=Count("id"))
        )
        for row in rows:
            by_queue[row["queue"]] = by_queue.get(row["queue"], 0) + row["n"]
            by_type[row["work_type_id"]] = by_type.get(row["work_type_id"], 0) + row["n"]
        return by_queue, by_type

    @cached_property
    def capable(self) -> dict[str, Any]:
        return {}  # queue -> release.CapableAgents, read when first needed

    def capable_names(self, queue: str, requirements: str) -> list[str]:
        from scheduling.services.release import capable_agents_loader

        if queue not in self.capable:
            self.capable[queue] = capable_agents_loader(queue)
        return self.capable[queue].names_for(requirements)

    def window(self, queue: str) -> int:
        from scheduling.services.release import queue_window

        return queue_window(queue)

    def reason(
        self,
        *,
        queue: str,
        work_type: str,
        stored: str = "",
        not_before: datetime | None = None,
        requirements: str = "",
    ) -> str:
        """Why a pending item with these columns waits now (READY: nothing holds it)."""
        if stored:
            return stored
        if not_before is not None and not_before > self.now:
            return NOT_BEFORE
        kind = self.types.get(work_type, {})
        if queue in self.paused_queues or kind.get("paused"):
            return PAUSED
        if requirements and not self.capable_names(queue, requirements):
            return NO_CAPABLE_AGENT
        by_queue, by_type = self.in_flight
        if kind.get("max_concurrency") is not None and by_type.get(work_type, 0) >= kind["max_concurrency"]:
            return CONCURRENCY_LIMIT
        if kind.get("rate_limit") and kind.get("rate_next_slot") is not None:
            horizon = self.now + timedelta(seconds=max(1.0, settings.SUPERVISOR_INTERVAL_SECONDS))
            if kind["rate_next_slot"] >= horizon:
                return RATE_LIMITED
        if by_queue.get(queue, 0) >= self.window(queue):
            return QUEUE_FULL
        return READY

    def item_reason(self, item: WorkItem) -> str:
        """The reason for one item ("" unless it is pending)."""
        if item.status != WorkItemStatus.PENDING:
            return ""
        return self.reason(
            queue=item.queue,
            work_type=item.work_type_id,
            stored=item.blocked_reason,
            not_before=item.not_before,
            requirements=item.requirements,
        )


def work_item_blocked_reason(item: WorkItem) -> str:
    """Why this item waits ("" unless pending)."""
    return BlockingFacts().item_reason(item)


def pending_reason_counts() -> dict[str, dict[str, int]]:
    """Per queue: pending items per blocked reason (one grouped read of pending rows)."""
    facts = BlockingFacts()
    rows = (
        WorkItem.objects.filter(status=WorkItemStatus.PENDING)
        .order_by()
        .values("queue", "work_type_id", "blocked_reason", "requirements")
        .annotate(n=Count("id"), later=Count("id", filter=Q(not_before__gt=facts.now)))
    )
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        per_queue = counts.setdefault(row["queue"], {})
        common = {"queue": row["queue"], "work_type": row["work_type_id"], "requirements": row["requirements"]}
        if row["blocked_reason"]:
            per_queue[row["blocked_reason"]] = per_queue.get(row["blocked_reason"], 0) + row["n"]
            continue
        if row["later"]:
            per_queue[NOT_BEFORE] = per_queue.get(NOT_BEFORE, 0) + row["later"]
        if row["n"] > row["later"]:
            reason = facts.reason(**common)
            per_queue[reason] = per_queue.get(reason, 0) + row["n"] - row["later"]
    return counts
