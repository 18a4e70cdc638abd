"""Every state transition of a work item: one conditional UPDATE fenced by status and
attempt that reports whether it won, plus its WorkItemEvent in the same transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now

from project.dbclock import now_plus
from project.exceptions import ValidationError
from scheduling.backoff import retry_delay_seconds
from scheduling.models import (
    IN_FLIGHT_STATUSES,
    Attempt,
    AttemptOutcome,
    EventKind,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    celery_task_id,
    statuses_from,
    transition_allowed,
)
from scheduling.services import statements
from scheduling.services.release import (
    SCHEDULER,
    Dispatch,
    limited_types,
    publish_soon,
    queue_window,
    release_after_finish_due,
    work_items_release,
)

logger = logging.getLogger("scheduling.services")
S = WorkItemStatus
_ROW_FIELDS = ("status", "attempt", "max_attempts", "requeue_count", "queue", "agent_id", "request_id")


def _transition(
    *,
    work_item_id: int,
    to_status: str,
    actor: str,
    reason: str = "",
    from_statuses: Iterable[str] | None = None,
    attempt: int | None = None,
    changes: dict[str, Any] | None = None,
    sets: statements.Statement | None = None,
    returning: tuple[str, ...] = (),
    close_attempt: tuple[str, str] | None = None,
    steps: tuple[statements.Statement | statements.NamedStep, ...] = (),
    selected: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """Move one item to `to_status` with a conditional UPDATE.

    The other columns it writes come as `changes` (ORM values and expressions) or,
    on the agent hot path, as `sets`, SQL written out so nothing is compiled per item.

    Returns the row as it was before (status, attempt, ...) plus the `returning`
    columns as they are after, when this call won; None when the item was not in
    an allowed state or another process got there first. The UPDATE matches on
    (pk, status, attempt), so a concurrent change makes it match nothing. When the
    caller names one from-status and the attempt (claim, finish), that is the fence
    and nothing is read first; otherwise the row is read to learn which from-state
    to fence on. The event, `close_attempt` (outcome, error: closes the running
    Attempt when the item was running) and `steps` are written with the UPDATE;
    `selected` adds expressions over named steps to the returned row (PostgreSQL).
    """
    candidates = [s for s in (from_statuses or statuses_from(to_status)) if transition_allowed(s, to_status)]
    known = len(candidates) == 1 and attempt is not None
    for _ in range(3):
        if known:
            row = {"status": candidates[0], "attempt": attempt}
        else:
            row = WorkItem.objects.filter(pk=work_item_id).values(*_ROW_FIELDS).first()
            if row is None or row["status"] not in candidates:
                return None
            if attempt is not None and row["attempt"] != attempt:
                return None
        follow = [
            statements.event_step(from_status=row["status"], to_status=to_status, actor=actor, reason=reason),
            *steps,
        ]
        if close_attempt is not None and row["status"] == S.RUNNING:
            follow.append(statements.attempt_close_step(outcome=close_attempt[0], error=close_attempt[1]))
        moved = statements.moved_run(
            statements.fenced_update(
                work_item_id=work_item_id,
                status=row["status"],
                attempt=row["attempt"],
                to_status=to_status,
                sets=sets if sets is not None else statements.orm_set_clause(changes or {}),
            ),
            returning=("id", "attempt", *returning),
            steps=follow,
            selected=selected,
        )
        if moved:
            names = [statements.alias(column) for column in (*returning, *selected)]
            return {**row, **dict(zip(names, moved[0][2:], strict=True))}
        if attempt is not None:
            return None
    return None


def _dependants_after_commit(row: dict[str, Any], work_item_id: int) -> None:
    """An item of a request finished: its dependants may run now, or must be cancelled.
    Items outside requests have no dependants, so the hot path pays nothing."""
    if row.get("request_id") is None:
        return

    def advance() -> None:
        from scheduling.services.requests import dependants_advance

        dependants_advance(parent_ids=[work_item_id])

    transaction.on_commit(advance)


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


def _claim_sets(*, agent_id: int) -> statements.Statement:
    lease, lease_params = statements.sql_now_plus(settings.WORK_ITEM_LEASE_SECONDS)
    now = statements.sql_now()
    return (
        f"agent_id = %s, lease_expires_at = {lease}, heartbeat_at = {now}, started_at = {now}, progress = 0.0, "
        "progress_message = '', progress_at = NULL",
        [agent_id, *lease_params],
    )


class ClaimedItem(NamedTuple):
    work_type: str
    payload: Any
    queue: str


def work_item_claim(
    *, work_item_id: int, attempt: int, agent_id: int, agent_name: str, worker_pid: int, task_id: str
) -> ClaimedItem | None:
    """queued -> running for exactly this attempt, under a fresh lease. Returns what
    the handler needs, or None if anyone else claimed it, it was cancelled, or the
    attempt was superseded. The item, its event and its Attempt row are written
    together (one statement on PostgreSQL)."""
    row = _transition(
        work_item_id=work_item_id,
        to_status=S.RUNNING,
        from_statuses=[S.QUEUED],
        attempt=attempt,
        actor=f"agent:{agent_name}",
        reason="claimed",
        sets=_claim_sets(agent_id=agent_id),
        returning=("work_type_id", "payload", "queue"),
        steps=(statements.attempt_open_step(agent_id=agent_id, task_id=task_id, worker_pid=worker_pid),),
    )
    if row is None:
        return None
    payload = WorkItem._meta.get_field("payload").from_db_value(row["payload"], None, connection)
    return ClaimedItem(work_type=row["work_type_id"], payload=payload, queue=row["queue"])


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


def work_item_succeed(*, work_item_id: int, attempt: int, actor: str, result: Any, queue: str = "") -> bool:
    """running -> succeeded for this attempt only; a superseded attempt's finish loses.
    The item, its event and its Attempt are written together (one statement on
    PostgreSQL), which also counts the queue's window.

    Given the item's `queue` (the agent has it from the claim), the same statement
    on PostgreSQL also releases the queue's next item into the slot this one frees
    (statements.refill_steps), and its message is published here. Whatever that
    cannot refill, the counted release does once half the window is free."""
    refill = bool(queue) and connection.vendor == "postgresql" and not limited_types()
    row = _transition(
        work_item_id=work_item_id,
        to_status=S.SUCCEEDED,
        from_statuses=[S.RUNNING],
        attempt=attempt,
        actor=actor,
        reason="handler returned",
        sets=(
            f"result = {statements.json_param()}, finished_at = {statements.sql_now()}, lease_expires_at = NULL, "
            "progress = 1.0, error = ''",
            [None if result is None else json.dumps(result)],
        ),
        returning=("queue", "request_id", "work_type_id", statements.IN_FLIGHT_OTHERS),
        close_attempt=(AttemptOutcome.SUCCEEDED, ""),
        steps=tuple(statements.refill_steps(queue=queue, window=queue_window(queue), actor=SCHEDULER))
        if refill
        else (),
        selected=statements.REFILL_SELECTED if refill else (),
    )
    if row is None:
        return False
    _dependants_after_commit(row, work_item_id)
    in_flight = row["in_flight"]
    if row.get("refill_id") is not None:
        in_flight += 1
        message = Dispatch(row["refill_id"], row["refill_attempt"], row["refill_budget_seconds"])
        transaction.on_commit(lambda: publish_soon(queue=row["queue"], message=message))
    if release_after_finish_due(queue=row["queue"], in_flight=in_flight, work_type=row["work_type_id"]):
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
        if outcome == AttemptOutcome.LOST and _lost_before(work_item_id, attempt):
            # Lost again: the item may be what kills its process. Wait at least two
            # ticks so the supervisor's poison check sees it before it runs again
            # (an instant retry would leave it in retry_wait for milliseconds).
            retry_delay = max(retry_delay, 2 * settings.SUPERVISOR_INTERVAL_SECONDS)
        changes["not_before"] = now_plus(retry_delay)
        reason = f"attempt {attempt} {outcome}: {error.splitlines()[0] if error else ''}; retry in {retry_delay:.1f}s"
    else:
        to_status = S.DEAD
        changes["finished_at"] = Now()
        allowed = row["max_attempts"] + row["requeue_count"]
        why = "not retryable" if not retryable else f"{attempt} of {allowed} attempts used"
        reason = f"attempt {attempt} {outcome}: {error.splitlines()[0] if error else ''}; dead-lettered ({why})"
    won = _transition(
        work_item_id=work_item_id,
        to_status=to_status,
        from_statuses=[S.RUNNING],
        attempt=attempt,
        actor=actor,
        reason=reason,
        changes=changes,
        close_attempt=(outcome, error),
    )
    if won is None:
        return None
    if to_status == S.DEAD:
        _dependants_after_commit(row, work_item_id)
    # A retry due now, or a freed slot in the window, lets the next item go. The
    # supervisor passes release=False and releases once at the end of its tick.
    if release:
        transaction.on_commit(lambda: work_items_release(queues=[row["queue"]]))
    return to_status


def _lost_before(work_item_id: int, attempt: int) -> bool:
    return Attempt.objects.filter(work_item_id=work_item_id, outcome=AttemptOutcome.LOST, number__lt=attempt).exists()


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


def _finish_early(
    *,
    work_item_id: int,
    to_status: str,
    actor: str,
    reason: str,
    outcome: str,
    attempt: int | None = None,
    changes: dict[str, Any],
) -> bool:
    """End an unfinished item now (cancelled or dead): one fenced transition that
    closes a running attempt, then after commit revoke what the broker or a pool
    process still holds, free its window slot, and advance its dependants."""
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=to_status,
            attempt=attempt,
            actor=actor,
            reason=reason,
            changes={"finished_at": Now(), "lease_expires_at": None, **changes},
            close_attempt=(outcome, reason),
        )
        if row is None:
            return False
        _dependants_after_commit(row, work_item_id)
        if row["status"] in IN_FLIGHT_STATUSES:
            _revoke_after_commit(
                work_item_id=work_item_id, attempt=row["attempt"], terminate=row["status"] == S.RUNNING
            )
            transaction.on_commit(lambda: work_items_release(queues=[row["queue"]], retries_due=False))
    return True


def work_item_cancel(*, work_item_id: int, actor: str, reason: str = "cancelled") -> bool:
    """Any non-terminal state -> cancelled. A cancelled item never runs: the claim
    checks the DB, and a running attempt is revoked and sees ctx.cancelled."""
    return _finish_early(
        work_item_id=work_item_id,
        to_status=S.CANCELLED,
        actor=actor,
        reason=reason,
        outcome=AttemptOutcome.CANCELLED,
        changes={},
    )


def work_item_dead_letter(*, work_item_id: int, actor: str, reason: str, attempt: int | None = None) -> bool:
    """Give up on an unfinished item now, whatever attempts remain (budget spent,
    poison, stalls). A queued or running attempt is revoked."""
    return _finish_early(
        work_item_id=work_item_id,
        to_status=S.DEAD,
        actor=actor,
        reason=reason,
        outcome=AttemptOutcome.FAILED,
        attempt=attempt,
        changes={"error": reason},
    )


def work_item_budget_warn(*, work_item_id: int, attempt: int, actor: str, budget: str, reason: str) -> bool:
    """Record, once per item and budget, that 80% of it is used (an event; no state change)."""
    marker = f"{budget}:"
    if WorkItemEvent.objects.filter(
        work_item_id=work_item_id, kind=EventKind.BUDGET_WARNING, reason__startswith=marker
    ).exists():
        return False
    status = WorkItem.objects.filter(pk=work_item_id).values_list("status", flat=True).first()
    if status is None:
        return False
    WorkItemEvent.objects.create(
        work_item_id=work_item_id,
        attempt=attempt,
        kind=EventKind.BUDGET_WARNING,
        from_status=status,
        to_status=status,
        actor=actor,
        reason=f"{marker} {reason}"[:2000],
    )
    return True


def work_type_pause(*, name: str, paused: bool = True) -> bool:
    """Pause (or resume) a work type: its pending items stay in the database.
    Returns whether this call changed it."""
    from scheduling.models import WorkType

    changed = WorkType.objects.filter(name=name, paused=not paused).update(paused=paused)
    if changed and not paused:
        transaction.on_commit(lambda: work_items_release(retries_due=False))
    return bool(changed)


def _back_to_pending(
    *, work_item_id: int, from_statuses: list[str], actor: str, reason: str, changes: dict[str, Any]
) -> bool:
    with transaction.atomic():
        row = _transition(
            work_item_id=work_item_id,
            to_status=S.PENDING,
            from_statuses=from_statuses,
            actor=actor,
            reason=reason,
            changes=changes,
        )
        if row is None:
            return False
        # Nothing here makes a retry due, so the release skips promoting retries.
        transaction.on_commit(lambda: work_items_release(queues=[row["queue"]], retries_due=False))
    return True


def work_item_retry(*, work_item_id: int, actor: str, reason: str = "retry requested") -> bool:
    """Start the next attempt now: a retry_wait item skips the rest of its backoff."""
    return _back_to_pending(
        work_item_id=work_item_id,
        from_statuses=[S.RETRY_WAIT],
        actor=actor,
        reason=reason,
        changes={"not_before": None},
    )


def work_item_requeue(
    *, work_item_id: int, actor: str, reason: str = "requeued by operator", payload: dict | None = None
) -> bool:
    """dead/cancelled -> pending with one more attempt granted (audited in the event log).
    With `payload`, the item runs with that payload instead (validated against its
    work type's schema first; the event says it was edited)."""
    changes: dict[str, Any] = {
        "requeue_count": F("requeue_count") + 1,
        "not_before": None,
        "finished_at": None,
        "error": "",
        "result": None,
        "progress": 0.0,
        "progress_message": "",
    }
    if payload is not None:
        from scheduling import registry

        work_type = WorkItem.objects.filter(pk=work_item_id).values_list("work_type_id", flat=True).first()
        if work_type is None:
            return False
        changes["payload"] = registry.payload_validate(registry.work_type_spec(work_type), payload)
        reason = f"{reason} (payload edited)"
    return _back_to_pending(
        work_item_id=work_item_id, from_statuses=[S.DEAD, S.CANCELLED], actor=actor, reason=reason, changes=changes
    )
