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
from django.db import IntegrityError
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now

from agents.services import agent_mark_lost
from project.dbclock import now_plus
from scheduling import services as scheduling
from scheduling.models import AttemptOutcome, WorkItemStatus
from scheduling.routing import SUPERVISOR_QUEUE, TICK_TASK
from supervision import monitors, policies
from supervision.models import Intervention, SupervisorLease, SupervisorRun

logger = logging.getLogger("shepherd.supervisor")
LEASE_NAME = "supervisor"
SCHEDULE_NAME = "shepherd supervisor tick"
ACTOR = "supervisor"


def _holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _hold_seconds() -> float:
    # Long enough for any tick; a leader that dies mid-tick is replaced after this.
    return max(30.0, 6 * settings.SUPERVISOR_INTERVAL_SECONDS)


def supervisor_lease_try_acquire(*, holder: str) -> bool:
    """Take the leader lease if it is free. Exactly one caller wins per interval."""
    with contextlib.suppress(IntegrityError):  # a concurrent caller created it
        SupervisorLease.objects.get_or_create(name=LEASE_NAME, defaults={"expires_at": Now()})
    return bool(
        SupervisorLease.objects.filter(name=LEASE_NAME, expires_at__lte=Now()).update(
            holder=holder, acquired_at=Now(), expires_at=now_plus(_hold_seconds())
        )
    )


def supervisor_lease_release(*, holder: str) -> None:
    # Keep the lease until most of an interval has passed since this tick began,
    # so a second beat (or a manual run) publishing ticks does not double the rate.
    spacing = timedelta(seconds=0.8 * settings.SUPERVISOR_INTERVAL_SECONDS)
    SupervisorLease.objects.filter(name=LEASE_NAME, holder=holder).update(
        expires_at=ExpressionWrapper(F("acquired_at") + spacing, output_field=DateTimeField())
    )


def supervisor_tick(*, holder: str | None = None) -> SupervisorRun | None:
    """One supervision pass. Returns its SupervisorRun, or None if another process leads."""
    holder = holder or _holder_name()
    if not supervisor_lease_try_acquire(holder=holder):
        logger.debug("tick skipped: another supervisor holds the lease")
        return None
    run = SupervisorRun.objects.create(holder=holder, started_at=Now())
    try:
        _supervise(run)
    except Exception:
        logger.exception("supervisor tick failed")
        run.error = traceback.format_exc()[-5000:]
    finally:
        run.finished_at = Now()
        run.save(update_fields=["findings", "actions", "released", "error", "finished_at"])
        supervisor_lease_release(holder=holder)
    run.refresh_from_db()
    return run


def _supervise(run: SupervisorRun) -> None:
    # Order matters: agents found dead this tick make their items orphans this tick.
    passes = [
        lambda: monitors.agents_stale(older_than=settings.AGENT_DEAD_AFTER),
        monitors.work_items_orphaned,
        monitors.work_items_lease_expired,
        lambda: monitors.work_items_unclaimed(older_than=settings.REDISPATCH_AFTER),
    ]
    for scan in passes:
        for finding in scan():
            run.findings += 1
            if intervene(run=run, finding=finding):
                run.actions += 1
    run.released = scheduling.work_items_release()


def intervene(*, run: SupervisorRun | None, finding: monitors.Finding) -> bool:
    """Act on one finding through the scheduler's services; record it if it took effect."""
    decision = policies.decide(finding)
    action = decision.action
    ok = False
    if action == "mark_agent_lost":
        ok = agent_mark_lost(agent_id=finding.agent_id, dead_after=settings.AGENT_DEAD_AFTER)
        action = Intervention.Action.MARK_AGENT_LOST
    elif action in ("retry", "revoke_retry"):
        outcome = AttemptOutcome.LOST if action == "retry" else AttemptOutcome.TIMED_OUT
        status = scheduling.work_item_fail(
            work_item_id=finding.work_item_id,
            attempt=finding.attempt,
            actor=ACTOR,
            outcome=outcome,
            error=f"{decision.reason}: {finding.evidence}",
            retry_delay=decision.retry_delay,
            release=False,  # the tick releases once, after every monitor has acted
        )
        ok = status is not None
        if ok and action == "revoke_retry":
            scheduling.attempt_revoke(work_item_id=finding.work_item_id, attempt=finding.attempt)
        action = Intervention.Action.DEAD_LETTER if status == WorkItemStatus.DEAD else Intervention.Action.RETRY
    elif action == "redispatch":
        ok = scheduling.work_item_redispatch(
            work_item_id=finding.work_item_id,
            attempt=finding.attempt,
            actor=ACTOR,
            reason=f"unclaimed for {finding.evidence.get('unclaimed_s')}s",
        )
        action = Intervention.Action.REDISPATCH
    if not ok:
        logger.info(
            "%s/%s on item %s agent %s: already handled",
            finding.monitor,
            finding.rule,
            finding.work_item_id,
            finding.agent_id,
        )
        return False
    Intervention.objects.create(
        run=run,
        monitor=finding.monitor,
        rule=finding.rule,
        action=action,
        outcome=Intervention.Outcome.DONE,
        evidence=finding.evidence,
        work_item_id=finding.work_item_id,
        attempt=finding.attempt,
        agent_id=finding.agent_id,
        actor=ACTOR,
    )
    logger.info(
        "%s/%s -> %s (item %s, agent %s) %s",
        finding.monitor,
        finding.rule,
        action,
        finding.work_item_id,
        finding.agent_id,
        finding.evidence,
    )
    return True


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
            "description": "Shepherd supervisor: health, lease and dispatch monitors (DESIGN.md §6).",
        },
    )
    return task
