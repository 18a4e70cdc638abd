"""Release pending items into each queue's broker window; publish and republish."""

from __future__ import annotations

import contextlib
import logging
import math
import queue as queue_module
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from celery.utils.nodenames import worker_direct
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Q, Value, When
from django.db.models.functions import Now

from agents.models import Agent, AgentStatus
from agents.selectors import agents_capacity_by_queue
from project.exceptions import NotFound
from project.threads import PerProcessThread
from scheduling import routing
from scheduling.capabilities import capabilities_satisfy
from scheduling.models import (
    EventKind,
    Queue,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkType,
    celery_task_id,
)
from scheduling.services import statements
from scheduling.services.ordering import requirements_split

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


def release_after_finish_due(*, queue: str, in_flight: int, work_type: str = "") -> bool:
    """Whether a finish should refill `queue`'s window, given how many of its items
    are still in flight: once half the window (at least one slot) is free, so a
    release moves several items at a time instead of one per finish (measured, B1:
    a release per item was a fifth of an agent's time). The window stays at least
    half full, so agents never wait for a release; the tick releases as well.
    A finish of a concurrency- or rate-limited type always refills: its freed slot
    is what the next item of that type waits for."""
    window = queue_window(queue)
    return window - in_flight >= max(1, window // 2) or work_type in limited_types()


class Dispatch(NamedTuple):
    """One message to publish: an item's attempt, with its time limit, its start
    slot (rate-limited types) and the agent it is routed to (capabilities)."""

    work_item_id: int
    attempt: int
    budget_seconds: int | None = None
    eta: datetime | None = None
    agent_name: str = ""


class _Limits(NamedTuple):
    max_concurrency: int | None
    rate_limit: float | None


_limits_cache: list = [0.0, {}]


def limited_types() -> dict[str, _Limits]:
    """Work types with a concurrency or rate limit (few), re-read at most every
    SHEPHERD_CAPACITY_CACHE_SECONDS per process."""
    now = time.monotonic()
    if _limits_cache[0] <= now:
        _limits_cache[1] = {
            name: _Limits(concurrency, rate)
            for name, concurrency, rate in WorkType.objects.filter(
                Q(max_concurrency__isnull=False) | Q(rate_limit__isnull=False)
            ).values_list("name", "max_concurrency", "rate_limit")
        }
        _limits_cache[0] = now + settings.SHEPHERD_CAPACITY_CACHE_SECONDS
    return _limits_cache[1]


def _queue_lock(queue: str) -> tuple[bool, bool] | None:
    """Take `queue`'s release lock for this transaction: releases of one queue run one
    at a time, so two never count the same free room (PostgreSQL: the Queue row's
    lock; SQLite: IMMEDIATE transactions already serialise writers). Returns
    (paused, items needing capabilities are pending), or None for an unknown queue."""
    sql, params = statements.queue_lock_select(queue=queue)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            if queue not in routing.work_queue_names():
                return None
            Queue.objects.get_or_create(name=queue)
            cursor.execute(sql, params)
            row = cursor.fetchone()
    return bool(row[0]), bool(row[1])


def _queue_release(queue: str) -> int:
    """Release pending items of `queue` into the room its window has, in release
    order (scheduling/services/ordering.py), under the queue's release lock.

    The common case, no limited type and no item needing capabilities, is one
    statement that counts the window, picks, moves the items to queued with their
    next attempt and writes their events (statements.py). Otherwise the release
    picks candidates per kind and merges them in order (_release_general).
    Publishing waits for the commit."""
    with transaction.atomic():
        state = _queue_lock(queue)
        if state is None or state[0]:
            return 0
        limited = limited_types()
        if limited or state[1]:
            dispatches = _release_general(queue, limited)
        else:
            rows = statements.moved_run(
                statements.release_update(queue=queue, window=queue_window(queue)),
                returning=statements.RELEASE_RETURNING,
                steps=_release_steps(queue),
            )
            dispatches = [Dispatch(row[0], row[1], row[2]) for row in sorted(rows, key=_release_order)]
        if dispatches:
            transaction.on_commit(lambda: publish(queue=queue, messages=dispatches))
    return len(dispatches)


def _release_steps(queue: str) -> list[statements.Statement]:
    return [
        statements.event_step(
            from_status=S.PENDING, to_status=S.QUEUED, actor=SCHEDULER, reason=f"released into queue {queue}"
        ),
        statements.virtual_clock_step(queue=queue),
    ]


def _order_key(pk: int, effective_priority: int, urgent_at: Any, fair_seq: int) -> tuple:
    """The release order as a Python sort key (statements._release_order_sql): no deadline last."""
    return (-effective_priority, urgent_at is None, urgent_at or "", fair_seq, pk)


def _release_order(row: tuple) -> tuple:
    """Sort key of a RELEASE_RETURNING row (id, attempt, budget, effective_priority,
    urgent_at, fair_seq), so messages are published in release order."""
    return _order_key(row[0], row[3], row[4], row[5])


class _Candidate(NamedTuple):
    order: tuple
    work_item_id: int
    work_type: str
    requirements: str


def _candidates(queue: str, *, extra: str, params: list, limit: int) -> list[_Candidate]:
    sql, base = statements.release_candidates(queue=queue, extra=extra, limit=limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*base[:-1], *params, base[-1]])
        return [
            _Candidate(_order_key(pk, eff, urgent, seq), pk, work_type, needs)
            for pk, eff, urgent, seq, work_type, needs in cursor.fetchall()
        ]


def _release_general(queue: str, limited: dict[str, _Limits]) -> list[Dispatch]:
    """The release with limited types or items that need capabilities: room per
    queue, then per limited type (concurrency: in flight below the limit; rate:
    start slots free within the next tick), then candidates of each kind merged
    in release order, each item needing capabilities routed to a live agent that
    has them (none: it stays pending, blocked by no_capable_agent)."""
    room = queue_window(queue) - statements.in_flight_count(queue=queue)
    if room <= 0:
        return []
    names = sorted(limited)
    marks = ", ".join(["%s"] * len(names))
    plain_types = f" AND w.work_type_id NOT IN ({marks})" if names else ""
    candidates = _candidates(queue, extra=f" AND w.requirements = ''{plain_types}", params=names, limit=room)
    # Items needing capabilities: look further ahead, past those no live agent can take.
    candidates += _candidates(queue, extra=" AND w.requirements <> ''", params=[], limit=room + 100)
    type_room: dict[str, int] = {}
    slots: dict[str, tuple[datetime, float]] = {}
    for name in names:
        free, slot = _type_room(name, limited[name], room)
        type_room[name] = free
        if slot is not None:
            slots[name] = slot
        if free > 0:
            candidates += _candidates(
                queue, extra=" AND w.requirements = '' AND w.work_type_id = %s", params=[name], limit=free
            )
    agents = capable_agents_loader(queue)
    chosen: list[tuple[_Candidate, str]] = []
    for candidate in sorted(candidates):
        if len(chosen) >= room:
            break
        if type_room.get(candidate.work_type, 1) <= 0:
            continue
        agent_name = ""
        if candidate.requirements:
            agent_name = agents.pick(candidate.requirements)
            if not agent_name:
                continue
        if candidate.work_type in type_room:
            type_room[candidate.work_type] -= 1
        chosen.append((candidate, agent_name))
    if not chosen:
        return []
    rows = statements.moved_run(
        statements.release_ids_update([c.work_item_id for c, _ in chosen]),
        returning=statements.RELEASE_RETURNING,
        steps=_release_steps(queue),
    )
    moved = {row[0]: row for row in rows}
    dispatches = []
    taken: dict[str, int] = {}
    for candidate, agent_name in chosen:
        row = moved.get(candidate.work_item_id)
        if row is None:  # cancelled since it was read
            continue
        eta = None
        if candidate.work_type in slots:
            start, rate = slots[candidate.work_type]
            n = taken[candidate.work_type] = taken.get(candidate.work_type, 0) + 1
            eta = start + timedelta(seconds=(n - 1) / rate)
        dispatches.append(Dispatch(row[0], row[1], row[2], eta, agent_name))
    for name, (start, rate) in slots.items():
        if taken.get(name):
            WorkType.objects.filter(name=name).update(rate_next_slot=start + timedelta(seconds=taken[name] / rate))
    # A slotted item counts as dispatched at its slot: the outbox waits from there.
    slotted = {d.work_item_id: d.eta for d in dispatches if d.eta is not None}
    if slotted:
        WorkItem.objects.filter(pk__in=slotted).update(
            dispatched_at=Case(*(When(pk=pk, then=Value(eta)) for pk, eta in slotted.items()))
        )
    return dispatches


def _type_room(name: str, limits: _Limits, room: int) -> tuple[int, tuple[datetime, float] | None]:
    """How many more items of work type `name` may be released now, holding the
    type's row lock until commit so releases of other queues count the same way;
    for a rate-limited type also the first free start slot and the rate."""
    row = (
        WorkType.objects.select_for_update()
        .filter(name=name)
        .annotate(db_now=Now())
        .values("max_concurrency", "rate_limit", "rate_next_slot", "db_now")
        .first()
    )
    if row is None:
        return 0, None
    free = room
    if row["max_concurrency"] is not None:
        in_flight = WorkItem.objects.filter(work_type_id=name, status__in=[S.QUEUED, S.RUNNING]).count()
        free = min(free, row["max_concurrency"] - in_flight)
    slot = None
    if row["rate_limit"]:
        rate = row["rate_limit"]
        now = row["db_now"]
        start = max(now, row["rate_next_slot"] or now)
        # Slots up to one supervisor interval ahead: the tick releases the next ones,
        # so the rate holds even when no finish triggers a release.
        horizon = now + timedelta(seconds=max(1.0, settings.SUPERVISOR_INTERVAL_SECONDS))
        ahead = (horizon - start).total_seconds()
        free = min(free, math.ceil(ahead * rate) if ahead > 0 else 0)
        slot = (start, rate)
    return max(free, 0), slot


class CapableAgents:
    """Live agents consuming a queue with their capabilities, read once per release;
    pick() spreads items needing capabilities over the agents that have them."""

    def __init__(self, agents: list[tuple[str, list[str], int]]) -> None:
        self.agents = agents
        self.assigned: dict[str, int] = {}

    def names_for(self, requirements: str) -> list[str]:
        needed = requirements_split(requirements)
        return [name for name, declared, _ in self.agents if capabilities_satisfy(declared, needed)]

    def pick(self, requirements: str) -> str:
        names = self.names_for(requirements)
        if not names:
            return ""
        concurrency = {name: c for name, _, c in self.agents}
        name = min(names, key=lambda n: (self.assigned.get(n, 0) / max(concurrency[n], 1), n))
        self.assigned[name] = self.assigned.get(name, 0) + 1
        return name


def capable_agents_loader(queue: str) -> CapableAgents:
    """Online (not draining) agents of `queue`, lazily: only items needing capabilities read them."""
    rows = [
        (name, capabilities or [], concurrency)
        for name, queues, capabilities, concurrency in Agent.objects.filter(status=AgentStatus.ONLINE).values_list(
            "name", "queues", "capabilities", "concurrency"
        )
        if queue in (queues or [])
    ]
    return CapableAgents(rows)


def publish(*, queue: str, messages: list[Dispatch]) -> None:
    """Publish one execute message per (item, attempt): to the queue, or to the
    direct queue of the agent an item needing capabilities was routed to, with
    the start slot of a rate-limited type as ETA. A failed publish leaves the
    item queued; the supervisor's dispatch monitor publishes it again."""
    from project.celery import app

    try:
        with app.producer_or_acquire() as producer:
            for message in messages:
                options: dict[str, Any] = {}
                if message.budget_seconds:
                    options = {"soft_time_limit": message.budget_seconds, "time_limit": message.budget_seconds + 30}
                if message.eta is not None:
                    options["eta"] = message.eta
                app.send_task(
                    routing.EXECUTE_TASK,
                    args=[message.work_item_id, message.attempt],
                    queue=worker_direct(message.agent_name) if message.agent_name else queue,
                    task_id=celery_task_id(message.work_item_id, message.attempt),
                    producer=producer,
                    **options,
                )
    except Exception:
        logger.exception("publishing %d message(s) to %s failed; the dispatch monitor will retry", len(messages), queue)


class _Publisher(PerProcessThread):
    """Publishes an agent's refill messages off its task's critical path.

    A finish releases the queue's next item in its own statement; publishing that
    message in the task would make the pool process wait a broker round trip before
    Celery hands it its next message (measured, B1: the publish was ~45% of a no-op
    item's time in the task). This thread publishes after the commit instead, and
    whatever queued up meanwhile goes out in one producer acquire. A message this
    thread never sends (the process killed) leaves its item queued, and the
    supervisor's dispatch monitor publishes it again, as after any failed publish."""

    def __init__(self) -> None:
        super().__init__(name="shepherd-publisher")
        self.pending: queue_module.Queue[tuple[str, Dispatch]] = queue_module.Queue()

    def run(self) -> None:
        while True:
            batch = [self.pending.get()]
            with contextlib.suppress(queue_module.Empty):
                while True:
                    batch.append(self.pending.get_nowait())
            by_queue: dict[str, list[Dispatch]] = {}
            for queue, message in batch:
                by_queue.setdefault(queue, []).append(message)
            try:
                for queue, messages in by_queue.items():
                    publish(queue=queue, messages=messages)
            finally:
                for _ in batch:
                    self.pending.task_done()


def publish_soon(*, queue: str, message: Dispatch) -> None:
    """Publish `message` from this process's publisher thread (call after commit)."""
    _Publisher.for_this_process().pending.put((queue, message))


def publisher_flush(timeout: float = 5.0) -> None:
    """Wait (up to `timeout`) until this process's publisher has sent what it holds:
    a pool process calls this before it exits, so a clean shutdown loses nothing."""
    publisher = _Publisher.running_here()
    if publisher is None:
        return
    done = threading.Event()
    threading.Thread(target=lambda: (publisher.pending.join(), done.set()), daemon=True).start()
    done.wait(timeout)


def work_item_redispatch(*, work_item_id: int, attempt: int, actor: str, reason: str) -> bool:
    """Publish the same attempt again (outbox); the fenced claim makes duplicates harmless."""
    with transaction.atomic():
        won = WorkItem.objects.filter(pk=work_item_id, status=S.QUEUED, attempt=attempt).update(
            dispatched_at=Now(), updated_at=Now()
        )
        if not won:
            return False
        row = WorkItem.objects.values("queue", "requirements", "work_type__budget_seconds").get(pk=work_item_id)
        agent_name = ""
        if row["requirements"]:
            # Routed again: the agent it went to may be gone; none capable, the queue.
            agent_name = capable_agents_loader(row["queue"]).pick(row["requirements"])
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
            lambda: publish(
                queue=row["queue"],
                messages=[Dispatch(work_item_id, attempt, row["work_type__budget_seconds"], agent_name=agent_name)],
            )
        )
    return True


def queue_pause(*, name: str, paused: bool = True) -> bool:
    """Pause (or resume) a queue: its pending items stay in the database and nothing
    more of it is released; items already in the broker run. A finish already under
    way when the pause commits may still release the one item that replaces it (the
    refill reads the flag without the queue's lock). Returns whether this call
    changed it."""
    if name not in routing.work_queue_names():
        raise NotFound(f"unknown queue {name!r} (known: {', '.join(routing.work_queue_names())})")
    Queue.objects.get_or_create(name=name)
    changed = Queue.objects.filter(name=name, paused=not paused).update(paused=paused, updated_at=Now())
    if changed and not paused:
        transaction.on_commit(lambda: work_items_release(queues=[name], retries_due=False))
    return bool(changed)
