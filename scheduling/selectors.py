"""Reads about work items for status, admin and the commands."""

from __future__ import annotations

from django.db.models import Count

from scheduling.models import NON_TERMINAL_STATUSES, WorkItem, WorkItemStatus
from scheduling.routing import work_queue_names


def work_item_counts() -> dict[str, int]:
    """Items per state, every state present (zero when empty)."""
    counts = dict.fromkeys(WorkItemStatus.values, 0)
    for row in WorkItem.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def queue_depths() -> dict[str, dict[str, int]]:
    """Per queue: non-terminal items by state (pending is the DB backlog; queued +
    running is what the broker window holds)."""
    depths = {queue: dict.fromkeys(sorted(NON_TERMINAL_STATUSES), 0) for queue in work_queue_names()}
    rows = (
        WorkItem.objects.filter(status__in=NON_TERMINAL_STATUSES)
        .order_by()
        .values("queue", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        depths.setdefault(row["queue"], dict.fromkeys(sorted(NON_TERMINAL_STATUSES), 0))[row["status"]] = row["n"]
    return depths


def work_items_non_terminal_count() -> int:
    return WorkItem.objects.filter(status__in=NON_TERMINAL_STATUSES).count()
