"""Agent writes: its own Agent row, and the execution of the attempt it holds."""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db.models import Case, F, Value, When
from django.db.models.functions import Now

from agents.context import HandlerContext, LeaseKeeper
from agents.models import LIVE_AGENT_STATUSES, Agent, AgentStatus
from project.dbclock import now_minus
from project.exceptions import Cancelled, PermanentError, ValidationError
from scheduling import registry
from scheduling import services as scheduling
from scheduling.models import Attempt, AttemptOutcome, EventKind, WorkItem, WorkItemEvent, WorkItemStatus

logger = logging.getLogger(__name__)

# Set in the worker's main process at worker_init, before the pool forks, so
# every pool child knows which Agent row it executes for.
_current_agent: Agent | None = None


def current_agent() -> Agent:
    if _current_agent is None:
        raise RuntimeError("this process is not a registered agent (no work queue consumed?)")
    return _current_agent


def agent_register(
    *, name: str, hostname: str, pid: int, queues: list[str], concurrency: int, capabilities: list[str], version: str
) -> Agent:
    """A new row per worker start: items held by an earlier incarnation stay with
    that row, which the health monitor marks lost when its heartbeat stops."""
    global _current_agent
    _current_agent = Agent.objects.create(
        name=name,
        hostname=hostname,
        pid=pid,
        queues=queues,
        concurrency=concurrency,
        capabilities=capabilities,
        version=version,
        status=AgentStatus.ONLINE,
        last_heartbeat_at=Now(),
    )
    _current_agent.refresh_from_db()
    logger.info("registered agent %s (id %s) for queues %s", name, _current_agent.pk, ",".join(queues))
    return _current_agent


def agent_heartbeat(*, agent_id: int) -> bool:
    """Beat. An agent the supervisor declared lost that beats again is online again;
    its old attempts stay superseded. False once the agent is offline."""
    # One statement: a process frozen (SIGSTOP) between two statements and declared
    # lost meanwhile would otherwise find itself neither lost nor live on waking, and
    # stop beating for good (seen in the SIGSTOP chaos test).
    return bool(
        Agent.objects.filter(pk=agent_id, status__in=[*LIVE_AGENT_STATUSES, AgentStatus.LOST]).update(
            status=Case(When(status=AgentStatus.LOST, then=Value(AgentStatus.ONLINE)), default=F("status")),
            last_heartbeat_at=Now(),
        )
    )


def agent_mark_draining(*, agent_id: int) -> bool:
    return bool(Agent.objects.filter(pk=agent_id, status=AgentStatus.ONLINE).update(status=AgentStatus.DRAINING))


def agent_mark_offline(*, agent_id: int) -> bool:
    return bool(
        Agent.objects.filter(pk=agent_id, status__in=[*LIVE_AGENT_STATUSES, AgentStatus.LOST]).update(
            status=AgentStatus.OFFLINE, stopped_at=Now()
        )
    )


def agent_mark_lost(*, agent_id: int, dead_after: float) -> bool:
    """Fenced on the heartbeat still being stale, so a beat that lands first wins."""
    return bool(
        Agent.objects.filter(
            pk=agent_id, status__in=LIVE_AGENT_STATUSES, last_heartbeat_at__lt=now_minus(dead_after)
        ).update(status=AgentStatus.LOST, stopped_at=Now())
    )


def _pid_alive(pid: int | None) -> bool:
    """True if the process exists and is not a zombie (a killed pool child stays a
    zombie until the worker reaps it, and kill(pid, 0) still succeeds on it)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): trust kill()


def _lost_pool_process_recover(*, agent: Agent, work_item_id: int, attempt: int) -> bool:
    """A redelivered message for an attempt this agent still holds means the pool
    process running it died (Celery requeues on WorkerLostError). Fail that attempt
    now rather than waiting for its lease to expire."""
    held = WorkItem.objects.filter(
        pk=work_item_id, status=WorkItemStatus.RUNNING, attempt=attempt, agent_id=agent.pk
    ).exists()
    if not held:
        return False
    worker_pid = (
        Attempt.objects.filter(work_item_id=work_item_id, number=attempt).values_list("worker_pid", flat=True).first()
    )
    if worker_pid == os.getpid() or _pid_alive(worker_pid):
        return False
    status = scheduling.work_item_fail(
        work_item_id=work_item_id,
        attempt=attempt,
        actor=f"agent:{agent.name}",
        outcome=AttemptOutcome.LOST,
        error=f"pool process {worker_pid} died while running attempt {attempt}",
        retry_delay=0,
    )
    logger.warning("item %s attempt %s: pool process %s died -> %s", work_item_id, attempt, worker_pid, status)
    return status is not None


HAND_ON_AT_MOST = 3


def _hand_on(*, agent: Agent, work_item_id: int, attempt: int) -> bool:
    """A retry of an attempt that stalled or wedged on this agent goes to another
    live agent of its queue if there is one: the message is published again and
    this process pauses so a free peer takes it. After HAND_ON_AT_MOST tries (the
    peers are busy) it runs here after all. Only retries pay this read."""
    previous = (
        Attempt.objects.filter(
            work_item_id=work_item_id,
            number=attempt - 1,
            outcome__in=[AttemptOutcome.STALLED, AttemptOutcome.TIMED_OUT],
        )
        .values_list("agent__name", "work_item__queue")
        .first()
    )
    if previous is None or previous[0] != agent.name:
        return False
    peers = [
        name
        for name, queues in Agent.objects.filter(status=AgentStatus.ONLINE).values_list("name", "queues")
        if name != agent.name and previous[1] in queues
    ]
    handed = WorkItemEvent.objects.filter(
        work_item_id=work_item_id, attempt=attempt, kind=EventKind.REDISPATCHED, reason__startswith="handed on"
    ).count()
    if not peers or handed >= HAND_ON_AT_MOST:
        return False
    done = scheduling.work_item_redispatch(
        work_item_id=work_item_id,
        attempt=attempt,
        actor=f"agent:{agent.name}",
        reason=f"handed on: attempt {attempt - 1} stalled on this agent; live peers {', '.join(sorted(peers))}",
    )
    if done:
        time.sleep(0.3)  # stay busy so a free peer, not this process, takes the message
    return done


def work_item_execute(*, work_item_id: Any, attempt: Any, task_id: str) -> str:
    """Claim (fenced), run the handler under a renewed lease, finish (fenced).

    Returns what happened, for the worker log: succeeded, retry_wait, dead,
    not_claimed, rejected (a superseded attempt's finish) or bad_message.
    """
    if not isinstance(work_item_id, int) or not isinstance(attempt, int):
        logger.error("dropping malformed execute message %r/%r", work_item_id, attempt)
        return "bad_message"
    agent = current_agent()
    actor = f"agent:{agent.name}"
    if attempt > 1 and _hand_on(agent=agent, work_item_id=work_item_id, attempt=attempt):
        return "handed_on"
    claimed = scheduling.work_item_claim(
        work_item_id=work_item_id,
        attempt=attempt,
        agent_id=agent.pk,
        agent_name=agent.name,
        worker_pid=os.getpid(),
        task_id=task_id,
    )
    if claimed is None:
        _lost_pool_process_recover(agent=agent, work_item_id=work_item_id, attempt=attempt)
        return "not_claimed"

    ctx = HandlerContext(work_item_id=work_item_id, attempt=attempt, work_type=claimed.work_type)
    keeper = LeaseKeeper(ctx)
    keeper.start()
    try:
        return _run_and_finish(
            ctx=ctx, actor=actor, work_type=claimed.work_type, payload=claimed.payload, queue=claimed.queue
        )
    finally:
        keeper.stop()


def _run_and_finish(*, ctx: HandlerContext, actor: str, work_type: str, payload: dict, queue: str) -> str:
    ids = {"work_item_id": ctx.work_item_id, "attempt": ctx.attempt}
    late_outcome = "failed"
    try:
        spec = registry.work_type_spec(work_type)
        result = spec.handler(ctx, payload)
    except ValidationError as error:
        status = scheduling.work_item_fail(
            **ids, actor=actor, error=f"this agent cannot run it: {error}", retryable=False
        )
    except Cancelled:
        late_outcome = "stopped"
        status = scheduling.work_item_fail(**ids, actor=actor, error="handler raised Cancelled while holding the item")
    except PermanentError as error:
        status = scheduling.work_item_fail(**ids, actor=actor, error=f"PermanentError: {error}", retryable=False)
    except SoftTimeLimitExceeded:
        status = scheduling.work_item_fail(
            **ids, actor=actor, error="budget_exceeded: soft time limit reached", retryable=False
        )
    except Exception as error:  # any other error retries while attempts remain (DESIGN.md §5)
        text = "".join(traceback.format_exception(error))
        status = scheduling.work_item_fail(**ids, actor=actor, error=f"{type(error).__name__}: {error}\n{text}")
    else:
        try:
            json.dumps(result)
        except (TypeError, ValueError) as error:
            status = scheduling.work_item_fail(
                **ids, actor=actor, retryable=False, error=f"handler returned a result that is not JSON: {error}"
            )
        else:
            late_outcome = "succeeded"
            won = scheduling.work_item_succeed(**ids, actor=actor, result=result, queue=queue)
            status = WorkItemStatus.SUCCEEDED if won else None
    if status is None:
        scheduling.work_item_finish_rejected(**ids, actor=actor, late_outcome=late_outcome)
        return "rejected"
    return str(status)


def agent_drain(*, agent_id: int) -> bool:
    """Stop an online agent taking new work; what it runs finishes. The agent's
    consumers are cancelled through Celery's control channel, and it counts for no
    capacity, so releases stop sending its queues work on its behalf."""
    agent = Agent.objects.filter(pk=agent_id, status=AgentStatus.ONLINE).first()
    if agent is None or not agent_mark_draining(agent_id=agent_id):
        return False
    _consumers_control(agent, "cancel_consumer")
    return True


def agent_resume(*, agent_id: int) -> bool:
    """Undo agent_drain: the agent consumes its queues again."""
    agent = Agent.objects.filter(pk=agent_id, status=AgentStatus.DRAINING).first()
    if agent is None:
        return False
    if not Agent.objects.filter(pk=agent_id, status=AgentStatus.DRAINING).update(status=AgentStatus.ONLINE):
        return False
    _consumers_control(agent, "add_consumer")
    return True


def _consumers_control(agent: Agent, command: str) -> None:
    from project.celery import app

    for queue in agent.queues:
        try:
            getattr(app.control, command)(queue, destination=[agent.name], reply=False)
        except Exception:  # the row already says draining; a missed broadcast only delays it
            logger.warning("%s %s for %s failed", command, queue, agent.name, exc_info=True)
