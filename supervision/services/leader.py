"""The supervisor: one leader per tick runs the monitors and acts through the
scheduler's services, leaving one Intervention row per action taken."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now

from project.dbclock import now_plus
from scheduling import services as scheduling
from scheduling.routing import SUPERVISOR_QUEUE, TICK_TASK
from supervision import monitors
from supervision.models import SupervisorLease, SupervisorRun
from supervision.services.interventions import intervene

logger = logging.getLogger("shepherd.supervisor")
LEASE_NAME = "supervisor"
SCHEDULE_NAME = "shepherd supervisor tick"


def _holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# pg_try_advisory_lock key: "SHEP" in ASCII.
ADVISORY_LOCK_KEY = 0x53484550


def _hold_seconds() -> float:
    """How long the lease row alone keeps other supervisors out. On PostgreSQL a
    session advisory lock guards the running tick instead, and the server drops
    it the moment a killed leader's connection closes, so the row only spaces
    ticks. Elsewhere the row is the guard: held for two intervals and renewed
    after every monitor pass, so a leader killed mid-tick is replaced within about
    three intervals."""
    if connection.vendor == "postgresql":
        return 0.8 * settings.SUPERVISOR_INTERVAL_SECONDS
    return max(2.0, 2 * settings.SUPERVISOR_INTERVAL_SECONDS)


def _advisory_lock(acquire: bool) -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(%s)" if acquire else "SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY]
        )
        return bool(cursor.fetchone()[0])


def supervisor_lease_try_acquire(*, holder: str) -> bool:
    """Take the leader lease if it is free. Exactly one caller wins per interval."""
    if not _advisory_lock(acquire=True):
        return False

    def take() -> bool:
        return bool(
            SupervisorLease.objects.filter(name=LEASE_NAME, expires_at__lte=Now()).update(
                holder=holder, acquired_at=Now(), expires_at=now_plus(_hold_seconds())
            )
        )

    # The row exists after the first tick ever, so look for it only when taking fails.
    won = take()
    if not won and not SupervisorLease.objects.filter(name=LEASE_NAME).exists():
        with contextlib.suppress(IntegrityError):  # a concurrent caller created it
            SupervisorLease.objects.get_or_create(name=LEASE_NAME, defaults={"expires_at": Now()})
        won = take()
    if not won:
        _advisory_lock(acquire=False)
    return won


class LeaseLost(Exception):
    """Another supervisor took the lease while this tick ran (it stalled past the hold)."""


def supervisor_lease_renew(*, holder: str) -> None:
    """Keep the row lease while a long tick runs (not needed under PostgreSQL's lock)."""
    if connection.vendor == "postgresql":
        return
    if not SupervisorLease.objects.filter(name=LEASE_NAME, holder=holder).update(expires_at=now_plus(_hold_seconds())):
        raise LeaseLost(f"{holder} lost the supervisor lease mid-tick")


def supervisor_lease_release(*, holder: str) -> None:
    # Keep the lease until most of an interval has passed since this tick began,
    # so a second beat (or a manual run) publishing ticks does not double the rate.
    spacing = timedelta(seconds=0.8 * settings.SUPERVISOR_INTERVAL_SECONDS)
    SupervisorLease.objects.filter(name=LEASE_NAME, holder=holder).update(
        expires_at=ExpressionWrapper(F("acquired_at") + spacing, output_field=DateTimeField())
    )
    # A lost connection has dropped the lock already.
    with contextlib.suppress(DatabaseError):
        _advisory_lock(acquire=False)


def supervisor_tick(*, holder: str | None = None) -> SupervisorRun | None:
    """One supervision pass. Returns its SupervisorRun, or None if another process leads."""
    holder = holder or _holder_name()
    if not supervisor_lease_try_acquire(holder=holder):
        logger.debug("tick skipped: another supervisor holds the lease")
        return None
    run = SupervisorRun.objects.create(holder=holder, started_at=Now())
    try:
        _supervise(run, holder=holder)
    except Exception:
        logger.exception("supervisor tick failed")
        run.error = traceback.format_exc()[-5000:]
    finally:
        run.finished_at = Now()
        run.save(update_fields=["findings", "actions", "released", "error", "finished_at"])
        supervisor_lease_release(holder=holder)
    # No refresh_from_db(): save() already read back the Now() it assigned (RETURNING).
    return run


def _supervise(run: SupervisorRun, *, holder: str) -> None:
    # Order matters: agents found dead this tick make their items orphans this tick,
    # and budgets are judged before the lease monitor would merely retry an item
    # that a hard time limit killed. A monitor whose census entry says it has
    # nothing to look at is skipped: on a quiet platform that is most of them.
    live = monitors.live_census(run_id=run.pk)
    passes = [
        (True, lambda: monitors.agents_stale(older_than=settings.AGENT_DEAD_AFTER)),
        (live.running, monitors.work_items_orphaned),
        (live.running or live.retry_wait, monitors.work_items_over_budget),
        (live.running, monitors.work_items_lease_expired),
        (
            live.running and live.stall_types,
            lambda: monitors.work_items_stalled(agent_dead_after=settings.AGENT_DEAD_AFTER),
        ),
        (live.deadline, monitors.work_items_past_deadline),
        (
            # running too: an item failed as lost earlier in this tick waits to retry now.
            live.pending or live.queued or live.retry_wait or live.running,
            lambda: monitors.work_items_poison(lost_at_least=settings.SHEPHERD_POISON_AFTER_LOST),
        ),
        (
            True,
            lambda: monitors.work_types_failing(
                window_seconds=settings.SHEPHERD_FAILURE_RATE_WINDOW_SECONDS,
                min_attempts=settings.SHEPHERD_FAILURE_RATE_MIN_ATTEMPTS,
                threshold=settings.SHEPHERD_FAILURE_RATE_THRESHOLD,
            ),
        ),
        (live.running and live.capability_types, monitors.attempts_outside_capabilities),
        (live.queued, lambda: monitors.work_items_unclaimed(older_than=settings.REDISPATCH_AFTER)),
        (
            live.needs_capabilities,
            lambda: monitors.work_items_without_capable_agent(older_than=settings.AGENT_DEAD_AFTER),
        ),
    ]
    for wanted, scan in passes:
        if not wanted:
            continue
        for finding in scan():
            run.findings += 1
            if intervene(run=run, finding=finding):
                run.actions += 1
        supervisor_lease_renew(holder=holder)
    # Backstop for dependants whose parent finished in a process that died before
    # its after-commit hook ran.
    if live.blocked:
        scheduling.dependants_advance(actor="supervisor")
    if live.aging_due:
        scheduling.work_items_age()
    scheduling.work_types_typical_refresh()  # at most once a minute
    # Monitors may have moved items to retry_wait this tick, so promote due retries
    # whenever any may exist now, not only when the census saw some.
    retries_due = live.retry_wait or run.actions > 0
    if live.pending or retries_due:
        run.released = scheduling.work_items_release(retries_due=retries_due)


def supervisor_run_once(*, wait_seconds: float | None = None) -> SupervisorRun | None:
    """Run one tick, waiting for the lease if another tick holds it (manual runs)."""
    deadline = time.monotonic() + (wait_seconds if wait_seconds is not None else _hold_seconds() + 1)
    while True:
        run = supervisor_tick()
        if run is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def supervisor_schedule_ensure():
    """Create or update the celery-beat PeriodicTask for the tick (idempotent)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = max(1, round(settings.SUPERVISOR_INTERVAL_SECONDS))
    schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    task, _ = PeriodicTask.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "task": TICK_TASK,
            "interval": schedule,
            "queue": SUPERVISOR_QUEUE,
            "routing_key": SUPERVISOR_QUEUE,
            "enabled": True,
            # A tick nobody ran in time is worthless: the next one covers it.
            "expire_seconds": max(2, 2 * every),
            "description": "Shepherd supervisor: health, lease, budget, progress, deadline, violation and "
            "dispatch monitors (DESIGN.md §6).",
        },
    )
    return task
