"""Reads about work items for status, admin and the commands."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from project.exceptions import NotFound
from scheduling.models import NON_TERMINAL_STATUSES, WorkItem, WorkItemStatus
from scheduling.routing import work_queue_names


def work_item_counts(user: Any = None) -> dict[str, int]:
    """Items per state, every state present (zero when empty); only the items
    `user` may see when a user is given."""
    items = WorkItem.objects.all() if user is None else work_items_visible_to(user)
    counts = dict.fromkeys(WorkItemStatus.values, 0)
    for row in items.order_by().values("status").annotate(n=Count("id")):
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


def work_items_visible_to(user: Any) -> QuerySet[WorkItem]:
    """Staff see every item; everyone else only what they submitted."""
    items = WorkItem.objects.all()
    return items if user.is_staff else items.filter(submitted_by=user)


def work_item_visible_to(user: Any, work_item_id: Any) -> WorkItem:
    """The item if this user may see it; NotFound otherwise (never says it exists)."""
    try:
        return work_items_visible_to(user).select_related("work_type", "agent").get(pk=int(work_item_id))
    except (ValueError, TypeError, WorkItem.DoesNotExist):
        raise NotFound(f"no work item with id {work_item_id!r}") from None
