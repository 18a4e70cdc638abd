"""Every write to work items: submission, release into queues, and each state transition.

A transition is one conditional UPDATE fenced by status and attempt; it reports
whether it won. The loser changes nothing. Each winning transition appends a
WorkItemEvent in the same transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from agents.selectors import agents_capacity_by_queue
from project.dbclock import now_plus
from project.exceptions import NotFound, ValidationError
from scheduling import registry, routing
from scheduling.backoff import retry_delay_seconds
from scheduling.models import (
    IN_FLIGHT_STATUSES,
    Attempt,
    AttemptOutcome,
    EventKind,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkType,
    celery_task_id,
    statuses_from,
    transition_allowed,
)

logger = logging.getLogger(__name__)
S = WorkItemStatus
SCHEDULER = "scheduler"
_ROW_FIELDS = ("status", "attempt", "max_attempts", "requeue_count", "queue", "agent_id")


# ---------------------------------------------------------------------------
# Work types
# ---------------------------------------------------------------------------
def work_types_sync(*, using: str = "default") -> None:
    """Mirror the code registry into WorkType rows. Code owns routing and schema;
    operators own the tunables (priority, attempts, budget, paused) after creation."""
    specs = registry.work_type_specs()
    routing.routing_table()  # fail loudly on a queue the routing table does not declare
    for spec in specs.values():
        WorkType.objects.using(using).update_or_create(
            name=spec.name,
            defaults={
                "queue": spec.queue,
                "description": spec.description,
                "payload_schema": spec.payload_schema,
                "capabilities": list(spec.capabilities),
                "in_code": True,
            },
            create_defaults={
                "queue": spec.queue,
                "description": spec.description,
                "payload_schema": spec.payload_schema,
                "capabilities": list(spec.capabilities),
                "priority": spec.priority,
                "max_attempts": spec.max_attempts,
                "budget_seconds": spec.budget_seconds,
            },
        )
    WorkType.objects.using(using).exclude(name__in=list(specs)).update(in_code=False)


def _work_type_row(name: str) -> WorkType:
    registry.work_type_spec(name)  # unknown names fail with the list of known ones
    row = WorkType.objects.filter(name=name).first()
    if row is None:
        work_types_sync()
        row = WorkType.objects.get(name=name)
    return row


# ---------------------------------------------------------------------------
# Submission
# ---------------------------------------------------------------------------
def _priority_check(priority: Any) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValidationError(f"priority must be an integer from 0 to 9, not {priority!r}")


def work_items_submit_ids(
    *,
    work_type: str,
    payloads: list[Any],
    priority: int | None = None,
    submitted_by: Any = None,
    not_before: datetime | None = None,
    complete_by: datetime | None = None,
) -> list[int]:
    """Validate every payload, then insert all items in one transaction (all or none);
    returns their ids in payload order.

    Items start `pending` and are released into their queue after commit.
    Raises ValidationError, naming the first bad payload, before anything is written.
    """
    spec = registry.work_type_spec(work_type)
    if priority is not None:
        _priority_check(priority)
    if not payloads:
        raise ValidationError("nothing to submit: no payloads given")
    cleaned = []
    seen: dict[int, dict] = {}  # `--count N` passes one payload object N times: validate it once
    for index, payload in enumerate(payloads):
        if id(payload) in seen:
            cleaned.append(seen[id(payload)])
            continue
        try:
            seen[id(payload)] = registry.payload_validate(spec, payload)
        except ValidationError as error:
            prefix = f"item {index + 1}: " if len(payloads) > 1 else ""
            raise ValidationError(f"{prefix}{error}") from None
        cleaned.append(seen[id(payload)])
    row = _work_type_row(work_type)
    shared = {
        "work_type_id": row.name,
        "queue": spec.queue,
        "priority": row.priority if priority is None else priority,
        "max_attempts": row.max_attempts,
        "not_before": not_before,
        "complete_by": complete_by,
        "submitted_by_id": submitted_by.pk if getattr(submitted_by, "pk", None) else None,
    }
    with transaction.atomic():
        if connection.vendor == "postgresql":
            ids = _insert_unnest(shared=shared, payloads=cleaned)
        else:
            items = WorkItem.objects.bulk_create([WorkItem(payload=p, **shared) for p in cleaned], batch_size=2000)
            ids = [item.pk for item in items]
        transaction.on_commit(lambda: work_items_release(queues=[spec.queue], retries_due=False))
    return ids


def _insert_unnest(*, shared: dict[str, Any], payloads: list[dict]) -> list[int]:
    """PostgreSQL: one INSERT ... SELECT FROM unnest(payloads) for the whole batch.
    Items of one submission differ only in payload, and the ORM's per-field
    preparation made bulk_create the bottleneck (about 9k items/s)."""
    texts: dict[int, str] = {}
    column = [texts.setdefault(id(p), json.dumps(p)) for p in payloads]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduling_workitem (
                work_type_id, queue, priority, max_attempts, not_before, complete_by, submitted_by_id, payload,
                status, blocked_reason, attempt, requeue_count, progress, progress_message, cost_total, error,
                created_at, updated_at)
            SELECT %s, %s, %s, %s, %s, %s, %s, payload::jsonb, %s, '', 0, 0, 0, '', 0, '', now(), now()
            FROM unnest(%s::text[]) WITH ORDINALITY AS batch(payload, n)
            ORDER BY n
            RETURNING id
            """,
            [
                shared["work_type_id"],
                shared["queue"],
                shared["priority"],
                shared["max_attempts"],
                shared["not_before"],
                shared["complete_by"],
                shared["submitted_by_id"],
                S.PENDING,
                column,
            ],
        )
        return [row[0] for row in cursor.fetchall()]


def work_items_submit(**options: Any) -> list[WorkItem]:
    """Like work_items_submit_ids, returning the items (one more query)."""
    ids = work_items_submit_ids(**options)
    found = WorkItem.objects.select_related("work_type").in_bulk(ids)
    return [found[pk] for pk in ids]


def work_item_submit(*, work_type: str, payload: Any = None, **options: Any) -> WorkItem:
    """Submit one item; see work_items_submit."""
    return work_items_submit(work_type=work_type, payloads=[{} if payload is None else payload], **options)[0]


# ---------------------------------------------------------------------------
# The transition primitive
# ---------------------------------------------------------------------------
def _transition(
    *,
    work_item_id: int,
    to_status: str,
    actor: str,
    reason: str = "",
    from_statuses: Iterable[str] | None = None,
    attempt: int | None = None,
    changes: dict[str, Any] | None = None,
    read_fields: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """Move one item to `to_status` with a conditional UPDATE.

    Returns the row as it was before (status, attempt, ...) when this call won,
    None when the item was not in an allowed state or another process got there
    first. The read only tells which from-state to fence on; the UPDATE matches
    on (pk, status, attempt), so a concurrent change makes it match nothing.
    """
    candidates = [s for s in (from_statuses or statuses_from(to_status)) if transition_allowed(s, to_status)]
    # No savepoint: nothing in here recovers from an error, and callers usually hold
    # the transaction already (a savepoint would cost two round trips per transition).
    with transaction.atomic(savepoint=False):
        for _ in range(3):
            row = WorkItem.objects.filter(pk=work_item_id).values(*_ROW_FIELDS, *read_fields).first()
            if row is None or row["status"] not in candidates:
                return None
            if attempt is not None and row["attempt"] != attempt:
                return None
            won = WorkItem.objects.filter(pk=work_item_id, status=row["status"], attempt=row["attempt"]).update(
                status=to_status, updated_at=Now(), **(changes or {})
            )
            if won:
                WorkItemEvent.objects.create(
                    work_item_id=work_item_id,
                    attempt=row["attempt"],
                    from_status=row["status"],
                    to_status=to_status,
                    actor=actor,
                    reason=reason[:2000],
                )
                return row
            if attempt is not None:
                return None
    return None


def _attempt_close(*, work_item_id: int, attempt: int, outcome: str, error: str = "") -> None:
    Attempt.objects.filter(work_item_id=work_item_id, number=attempt, outcome=AttemptOutcome.RUNNING).update(
        outcome=outcome, finished_at=Now(), error=error[:10000]
    )


def attempt_revoke(*, work_item_id: int, attempt: int, terminate: bool = True) -> None:
    """Revoke an attempt's Celery task (after commit); with terminate, kill the
    pool process running it. The DB state already decides; this only saves time."""
    _revoke_after_commit(work_item_id=work_item_id, attempt=attempt, terminate=terminate)


def _revoke_after_commit(*, work_item_id: int, attempt: int, terminate: bool) -> None:
    def revoke() -> None:
        from project.celery import app

        try:
            # SIGKILL: a wedged or non-cooperative handler may ignore SIGTERM.
            app.control.revoke(celery_task_id(work_item_id, attempt), terminate=terminate, signal="SIGKILL")
        except Exception:  # the DB state already forbids running it; revoke only saves time
            logger.warning("revoke of #%s attempt %s failed", work_item_id, attempt, exc_info=True)

    transaction.on_commit(revoke)


# ---------------------------------------------------------------------------
# Release: pending -> queued within each queue's window
# ---------------------------------------------------------------------------
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


def _queue_release(queue: str) -> int:
    with transaction.atomic():
        in_flight = WorkItem.objects.filter(queue=queue, status__in=IN_FLIGHT_STATUSES).count()
        room = queue_window(queue) - in_flight
        if room <= 0:
            return 0
        ids = list(
            WorkItem.objects.filter(queue=queue, status=S.PENDING, blocked_reason="", work_type__paused=False)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=Now()))
            .order_by("-priority", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("id", flat=True)[:room]
        )
        if not ids:
            return 0
        WorkItem.objects.filter(pk__in=ids, status=S.PENDING).update(
            status=S.QUEUED, attempt=F("attempt") + 1, dispatched_at=Now(), updated_at=Now()
        )
        released = list(
            WorkItem.objects.filter(pk__in=ids, status=S.QUEUED)
            .order_by("-priority", "id")
            .values_list("id", "attempt", "work_type__budget_seconds")
        )
        _events_bulk(
            [(pk, attempt) for pk, attempt, _ in released],
            from_status=S.PENDING,
            to_status=S.QUEUED,
            reason=f"released into queue {queue}",
        )
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


# ---------------------------------------------------------------------------
# The attempt an agent holds: claim, lease, progress, cost, finish
# ---------------------------------------------------------------------------
class ClaimedItem(NamedTuple):
    work_type: str
    payload: Any


def work_item_claim(
    *, work_item_id: int, attempt: int, agent_id: int, agent_name: str, worker_pid: int, task_id: str
) -> ClaimedItem | None:
    """queued -> running for exactly this attempt, under a fresh lease. Returns what
    the handler needs, or None if anyone else claimed it, it was cancelled, or the
    attempt was superseded."""
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=S.RUNNING,
            from_statuses=[S.QUEUED],
            attempt=attempt,
            actor=f"agent:{agent_name}",
            reason="claimed",
            changes={
                "agent_id": agent_id,
                "lease_expires_at": now_plus(settings.WORK_ITEM_LEASE_SECONDS),
                "heartbeat_at": Now(),
                "started_at": Now(),
                "progress": 0.0,
                "progress_message": "",
                "progress_at": None,
            },
            read_fields=("work_type_id", "payload"),
        )
        if row is None:
            return None
        Attempt.objects.create(
            work_item_id=work_item_id,
            number=attempt,
            agent_id=agent_id,
            celery_task_id=task_id,
            worker_pid=worker_pid,
            started_at=Now(),
        )
    return ClaimedItem(work_type=row["work_type_id"], payload=row["payload"])


def work_item_lease_renew(*, work_item_id: int, attempt: int) -> bool:
    """Extend the lease of a running attempt. False means the attempt no longer holds
    the item (cancelled, superseded or finished): the handler should stop."""
    return bool(
        WorkItem.objects.filter(pk=work_item_id, status=S.RUNNING, attempt=attempt).update(
            lease_expires_at=now_plus(settings.WORK_ITEM_LEASE_SECONDS), heartbeat_at=Now()
        )
    )


def work_item_progress_report(*, work_item_id: int, attempt: int, fraction: float, message: str = "") -> bool:
    fraction = min(1.0, max(0.0, float(fraction)))
    return bool(
        WorkItem.objects.filter(pk=work_item_id, status=S.RUNNING, attempt=attempt).update(
            progress=fraction, progress_message=message[:200], progress_at=Now(), heartbeat_at=Now()
        )
    )


def work_item_charge(*, work_item_id: int, attempt: int, amount: float) -> bool:
    if amount < 0:
        raise ValidationError("a charge cannot be negative")
    with transaction.atomic():
        won = WorkItem.objects.filter(pk=work_item_id, status=S.RUNNING, attempt=attempt).update(
            cost_total=F("cost_total") + amount
        )
        if won:
            Attempt.objects.filter(work_item_id=work_item_id, number=attempt).update(cost=F("cost") + amount)
    return bool(won)


def work_item_succeed(*, work_item_id: int, attempt: int, actor: str, result: Any) -> bool:
    """running -> succeeded for this attempt only; a superseded attempt's finish loses."""
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=S.SUCCEEDED,
            from_statuses=[S.RUNNING],
            attempt=attempt,
            actor=actor,
            reason="handler returned",
            changes={"result": result, "finished_at": Now(), "lease_expires_at": None, "progress": 1.0, "error": ""},
        )
        if row is None:
            return False
        _attempt_close(work_item_id=work_item_id, attempt=attempt, outcome=AttemptOutcome.SUCCEEDED)
        transaction.on_commit(lambda: work_items_release(queues=[row["queue"]], retries_due=False))
    return True


def work_item_fail(
    *,
    work_item_id: int,
    attempt: int,
    actor: str,
    error: str,
    retryable: bool = True,
    outcome: str = AttemptOutcome.FAILED,
    retry_delay: float | None = None,
    release: bool = True,
) -> str | None:
    """End a running attempt as failed. Retries (retry_wait, with backoff unless
    `retry_delay` is given) while attempts remain and the error is retryable,
    else dead-letters. Returns the new status, or None if this attempt no longer
    held the item."""
    row = WorkItem.objects.filter(pk=work_item_id).values(*_ROW_FIELDS).first()
    if row is None or row["status"] != S.RUNNING or row["attempt"] != attempt:
        return None
    attempts_left = row["attempt"] < row["max_attempts"] + row["requeue_count"]
    changes: dict[str, Any] = {"lease_expires_at": None, "error": error[:10000]}
    if retryable and attempts_left:
        to_status = S.RETRY_WAIT
        if retry_delay is None:
            retry_delay = retry_delay_seconds(
                attempt=attempt, base=settings.RETRY_BACKOFF_BASE_SECONDS, cap=settings.RETRY_BACKOFF_MAX_SECONDS
            )
        changes["not_before"] = now_plus(retry_delay)
        reason = f"attempt {attempt} {outcome}: {error.splitlines()[0] if error else ''}; retry in {retry_delay:.1f}s"
    else:
        to_status = S.DEAD
        changes["finished_at"] = Now()
        allowed = row["max_attempts"] + row["requeue_count"]
        why = "not retryable" if not retryable else f"{attempt} of {allowed} attempts used"
        reason = f"attempt {attempt} {outcome}: {error.splitlines()[0] if error else ''}; dead-lettered ({why})"
    with transaction.atomic():
        won = _transition(
            work_item_id=work_item_id,
            to_status=to_status,
            from_statuses=[S.RUNNING],
            attempt=attempt,
            actor=actor,
            reason=reason,
            changes=changes,
        )
        if won is None:
            return None
        _attempt_close(work_item_id=work_item_id, attempt=attempt, outcome=outcome, error=error)
        # A retry due now, or a freed slot in the window, lets the next item go. The
        # supervisor passes release=False and releases once at the end of its tick.
        if release:
            transaction.on_commit(lambda: work_items_release(queues=[row["queue"]]))
    return to_status


def work_item_finish_rejected(*, work_item_id: int, attempt: int, actor: str, late_outcome: str) -> None:
    """Record that a superseded attempt tried to finish; nothing else changes."""
    row = WorkItem.objects.filter(pk=work_item_id).values("status", "attempt").first()
    if row is None:
        return
    with transaction.atomic():
        WorkItemEvent.objects.create(
            work_item_id=work_item_id,
            attempt=attempt,
            kind=EventKind.FINISH_REJECTED,
            from_status=row["status"],
            to_status=row["status"],
            actor=actor,
            reason=(
                f"late {late_outcome} from attempt {attempt} rejected: "
                f"item is {row['status']} at attempt {row['attempt']}"
            ),
        )
        Attempt.objects.filter(work_item_id=work_item_id, number=attempt).update(late_outcome=late_outcome)


# ---------------------------------------------------------------------------
# Operator and supervisor actions
# ---------------------------------------------------------------------------
def work_item_cancel(*, work_item_id: int, actor: str, reason: str = "cancelled") -> bool:
    """Any non-terminal state -> cancelled. A cancelled item never runs: the claim
    checks the DB, and a running attempt is revoked and sees ctx.cancelled."""
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=S.CANCELLED,
            actor=actor,
            reason=reason,
            changes={"finished_at": Now(), "lease_expires_at": None},
        )
        if row is None:
            return False
        if row["status"] == S.RUNNING:
            _attempt_close(
                work_item_id=work_item_id, attempt=row["attempt"], outcome=AttemptOutcome.CANCELLED, error=reason
            )
        if row["status"] in IN_FLIGHT_STATUSES:
            _revoke_after_commit(
                work_item_id=work_item_id, attempt=row["attempt"], terminate=row["status"] == S.RUNNING
            )
            transaction.on_commit(lambda: work_items_release(queues=[row["queue"]]))
    return True


def work_item_dead_letter(*, work_item_id: int, actor: str, reason: str, attempt: int | None = None) -> bool:
    """Give up on a queued or running item now, whatever attempts remain."""
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=S.DEAD,
            from_statuses=[S.QUEUED, S.RUNNING],
            attempt=attempt,
            actor=actor,
            reason=reason,
            changes={"finished_at": Now(), "lease_expires_at": None, "error": reason},
        )
        if row is None:
            return False
        if row["status"] == S.RUNNING:
            _attempt_close(
                work_item_id=work_item_id, attempt=row["attempt"], outcome=AttemptOutcome.FAILED, error=reason
            )
        _revoke_after_commit(work_item_id=work_item_id, attempt=row["attempt"], terminate=row["status"] == S.RUNNING)
        transaction.on_commit(lambda: work_items_release(queues=[row["queue"]]))
    return True


def work_item_retry(*, work_item_id: int, actor: str, reason: str = "retry requested") -> bool:
    """Start the next attempt now: a retry_wait item skips the rest of its backoff."""
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=S.PENDING,
            from_statuses=[S.RETRY_WAIT],
            actor=actor,
            reason=reason,
            changes={"not_before": None},
        )
        if row is None:
            return False
        transaction.on_commit(lambda: work_items_release(queues=[row["queue"]]))
    return True


def work_item_requeue(*, work_item_id: int, actor: str, reason: str = "requeued by operator") -> bool:
    """dead/cancelled -> pending with one more attempt granted (audited in the event log)."""
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=S.PENDING,
            from_statuses=[S.DEAD, S.CANCELLED],
            actor=actor,
            reason=reason,
            changes={
                "requeue_count": F("requeue_count") + 1,
                "not_before": None,
                "finished_at": None,
                "error": "",
                "result": None,
                "progress": 0.0,
                "progress_message": "",
            },
        )
        if row is None:
            return False
        transaction.on_commit(lambda: work_items_release(queues=[row["queue"]]))
    return True


def work_item_get(*, work_item_id: Any) -> WorkItem:
    try:
        return WorkItem.objects.get(pk=int(work_item_id))
    except (ValueError, TypeError, WorkItem.DoesNotExist):
        raise NotFound(f"no work item with id {work_item_id!r}") from None
