"""Release pending items into each queue's broker window; publish and republish."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from agents.selectors import agents_capacity_by_queue
from scheduling import routing
from scheduling.models import (
    EventKind,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    celery_task_id,
)
from scheduling.services import statements

logger = logging.getLogger("scheduling.services")
S = WorkItemStatus
SCHEDULER = "scheduler"


def work_items_release(*, queues: Iterable[str] | None = None, retries_due: bool = True) -> int:
    """Promote due retries, then release pending items into each queue's window.

    The database is the queue; the broker holds a window per queue (queued +
    running). Returns how many items were released. Callers that cannot have made
    a retry due (a success, a submission) pass retries_due=False; the tick and
    failures promote them.
    """
    if retries_due:
        _retries_promote_due()
    return sum(_queue_release(queue) for queue in (queues or routing.work_queue_names()))


def _events_bulk(rows: Iterable[tuple[int, int]], *, from_status: str, to_status: str, reason: str) -> None:
    """Events for a batch transition whose rows the caller holds locked, so every row won."""
    WorkItemEvent.objects.bulk_create(
        WorkItemEvent(
            work_item_id=pk,
            attempt=attempt,
            from_status=from_status,
            to_status=to_status,
            actor=SCHEDULER,
            reason=reason,
        )
        for pk, attempt in rows
    )


def _retries_promote_due(limit: int = 1000) -> int:
    with transaction.atomic():
        due = list(
            WorkItem.objects.filter(status=S.RETRY_WAIT, not_before__lte=Now())
            .select_for_update(skip_locked=True)
            .values_list("id", "attempt")[:limit]
        )
        if not due:
            return 0
        ids = [pk for pk, _ in due]
        WorkItem.objects.filter(pk__in=ids, status=S.RETRY_WAIT).update(
            status=S.PENDING, not_before=None, updated_at=Now()
        )
        _events_bulk(due, from_status=S.RETRY_WAIT, to_status=S.PENDING, reason="retry due")
    return len(due)


_capacity_cache: dict[str, tuple[float, int]] = {}


def _capacity_cached(queue: str) -> int:
    # Agents come and go in seconds, items finish in milliseconds: one capacity
    # read per SHEPHERD_CAPACITY_CACHE_SECONDS per process keeps it off the hot path.
    now = time.monotonic()
    cached = _capacity_cache.get(queue)
    if cached is None or cached[0] <= now:
        cached = (now + settings.SHEPHERD_CAPACITY_CACHE_SECONDS, agents_capacity_by_queue([queue])[queue])
        _capacity_cache[queue] = cached
    return cached[1]


def queue_window(queue: str) -> int:
    """How many items of `queue` may be in the broker (queued + running) at once:
    SHEPHERD_QUEUE_WINDOW_PER_PROCESS per live pool process serving it, at least
    that many with no agent up, at most SHEPHERD_QUEUE_WINDOW. A small window keeps
    order in the DB: a retry goes out ahead of later items instead of behind them."""
    per_process = settings.SHEPHERD_QUEUE_WINDOW_PER_PROCESS
    capacity = _capacity_cached(queue)
    return min(settings.SHEPHERD_QUEUE_WINDOW, per_process * max(capacity, 1))


def release_after_finish_due(*, queue: str, in_flight: int) -> bool:
    """Whether a finish should refill `queue`'s window, given how many of its items
    are still in flight: once half the window (at least one slot) is free, so a
    release moves several items at a time instead of one per finish (measured, B1:
    a release per item was a fifth of an agent's time). The window stays at least
    half full, so agents never wait for a release; the tick releases as well."""
    window = queue_window(queue)
    return window - in_flight >= max(1, window // 2)


def _queue_release(queue: str) -> int:
    """Release pending items of `queue` into the room its window has, in priority
    order: one statement that counts the window, picks (skipping rows another
    release holds), moves them to queued with the next attempt, and writes their
    events (see statements.py; a few statements in one transaction on SQLite).
    Publishing waits for the commit."""
    rows = statements.moved_run(
        statements.release_update(queue=queue, window=queue_window(queue)),
        returning=statements.RELEASE_RETURNING,
        steps=[
            statements.event_step(
                from_status=S.PENDING, to_status=S.QUEUED, actor=SCHEDULER, reason=f"released into queue {queue}"
            )
        ],
    )
    if not rows:
        return 0
    released = [(pk, attempt, budget) for pk, attempt, _, budget in sorted(rows, key=lambda row: (-row[2], row[0]))]
    transaction.on_commit(lambda: _publish(queue=queue, messages=released))
    return len(released)


def _publish(*, queue: str, messages: list[tuple[int, int, int | None]]) -> None:
    """Publish one execute message per (item, attempt). A failed publish leaves the
    item queued; the supervisor's dispatch monitor publishes it again."""
    from project.celery import app

    try:
        with app.producer_or_acquire() as producer:
            for work_item_id, attempt, budget_seconds in messages:
                limits = {}
                if budget_seconds:
                    limits = {"soft_time_limit": budget_seconds, "time_limit": budget_seconds + 30}
                app.send_task(
                    routing.EXECUTE_TASK,
                    args=[work_item_id, attempt],
                    queue=queue,
                    task_id=celery_task_id(work_item_id, attempt),
                    producer=producer,
                    **limits,
                )
    except Exception:
        logger.exception("publishing %d message(s) to %s failed; the dispatch monitor will retry", len(messages), queue)


def work_item_redispatch(*, work_item_id: int, attempt: int, actor: str, reason: str) -> bool:
    """Publish the same attempt again (outbox); the fenced claim makes duplicates harmless."""
    with transaction.atomic():
        won = WorkItem.objects.filter(pk=work_item_id, status=S.QUEUED, attempt=attempt).update(
            dispatched_at=Now(), updated_at=Now()
        )
        if not won:
            return False
        row = WorkItem.objects.values("queue", "work_type__budget_seconds").get(pk=work_item_id)
        WorkItemEvent.objects.create(
            work_item_id=work_item_id,
            attempt=attempt,
            kind=EventKind.REDISPATCHED,
            from_status=S.QUEUED,
            to_status=S.QUEUED,
            actor=actor,
            reason=reason,
        )
        transaction.on_commit(
            lambda: _publish(queue=row["queue"], messages=[(work_item_id, attempt, row["work_type__budget_seconds"])])
        )
    return True
