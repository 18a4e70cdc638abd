"""How a transition reaches the database: its conditional UPDATE and the rows written with it.

A transition is one `UPDATE work_item ... WHERE id = %s AND status = %s AND attempt = %s
RETURNING ...` (the fence), followed by the rows that must be written with it: its
WorkItemEvent, and the Attempt it opens or closes. Those follow-ups are SQL written
once, each reading the moved rows from a relation named `moved` (columns id, attempt).

- PostgreSQL runs the whole transition as ONE statement, a data-modifying CTE
  (`WITH moved AS (UPDATE ... RETURNING ...), s0 AS (INSERT ... FROM moved) SELECT ...
  FROM moved`): one round trip and, outside a transaction, its own commit.
- Other databases (SQLite) run the UPDATE ... RETURNING, then each follow-up with
  `moved` given as a VALUES list, all in one transaction.

The same text serves both, so a follow-up cannot differ between the two paths.
Measured on the agent hot path: Django compiling ~13 ORM statements and their
round trips were most of an item's cost; this is 2-3 statements per item.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from django.db import connection, transaction
from django.db.models.functions import Now
from django.db.models.sql import Query, UpdateQuery

from project.dbclock import now_plus
from scheduling.models import (
    Attempt,
    EventKind,
    Queue,
    SubmitterClock,
    WorkItem,
    WorkItemEvent,
    WorkItemStatus,
    WorkType,
)

Statement = tuple[str, Sequence[Any]]

ITEMS = WorkItem._meta.db_table
EVENTS = WorkItemEvent._meta.db_table
ATTEMPTS = Attempt._meta.db_table
TYPES = WorkType._meta.db_table
QUEUES = Queue._meta.db_table
S = WorkItemStatus


def _compile(expression: Any) -> tuple[str, tuple[Any, ...]]:
    query = Query(WorkItem)
    sql, params = query.get_compiler(connection=connection).compile(expression.resolve_expression(query))
    return sql, tuple(params)


@functools.cache
def _now(vendor: str) -> str:
    return _compile(Now())[0]


@functools.cache
def _now_plus(vendor: str, seconds: float) -> tuple[str, tuple[Any, ...]]:
    return _compile(now_plus(seconds))


def sql_now() -> str:
    """The database clock as SQL (project.dbclock's Now(), compiled once per vendor)."""
    return _now(connection.vendor)


def sql_now_plus(seconds: float) -> tuple[str, tuple[Any, ...]]:
    """The database clock plus `seconds`, as SQL and params (dbclock.now_plus, compiled once)."""
    return _now_plus(connection.vendor, float(seconds))


def json_param() -> str:
    """Placeholder for a JSON text parameter written to a JSON column."""
    return "%s::jsonb" if connection.vendor == "postgresql" else "%s"


def event_step(
    *,
    from_status: str,
    to_status: str,
    actor: str,
    reason: str,
    kind: str = EventKind.TRANSITION,
    source: str = "moved",
) -> Statement:
    """The WorkItemEvent of every row in `source` (the moved rows unless named)."""
    return (
        f"INSERT INTO {EVENTS} (work_item_id, kind, attempt, from_status, to_status, actor, reason, at) "
        f"SELECT id, %s, attempt, %s, %s, %s, %s, {sql_now()} FROM {source}",
        [kind, from_status, to_status, actor[:150], reason[:2000]],
    )


def attempt_open_step(*, agent_id: int, task_id: str, worker_pid: int) -> Statement:
    """The Attempt row a claim opens (outcome running)."""
    return (
        f"INSERT INTO {ATTEMPTS} (work_item_id, number, agent_id, celery_task_id, worker_pid, started_at, "
        f"finished_at, outcome, error, cost, late_outcome) "
        f"SELECT id, attempt, %s, %s, %s, {sql_now()}, NULL, 'running', '', 0, '' FROM moved",
        [agent_id, task_id[:100], worker_pid],
    )


def attempt_close_step(*, outcome: str, error: str = "") -> Statement:
    """Close the running Attempt of every row in `moved`."""
    return (
        f"UPDATE {ATTEMPTS} SET outcome = %s, finished_at = {sql_now()}, error = %s "
        f"WHERE outcome = 'running' AND EXISTS (SELECT 1 FROM moved "
        f"WHERE moved.id = {ATTEMPTS}.work_item_id AND moved.attempt = {ATTEMPTS}.number)",
        [outcome, error[:10000]],
    )


def orm_set_clause(changes: dict[str, Any]) -> Statement:
    """`col = value, ...` for work item `changes` as the ORM prepares them (field
    adaptation, expressions such as Now() or F() + 1), for transitions off the hot path."""
    query = UpdateQuery(WorkItem)
    query.add_update_values(changes)
    sql, params = query.get_compiler(connection=connection).as_sql()
    prefix = f"UPDATE {connection.ops.quote_name(ITEMS)} SET "
    if not sql.startswith(prefix):  # an UPDATE with no WHERE: nothing else can follow SET
        raise AssertionError(f"unexpected UPDATE shape: {sql[:80]}")
    return sql[len(prefix) :], list(params)


def fenced_update(*, work_item_id: int, status: str, attempt: int, to_status: str, sets: Statement) -> Statement:
    """The fence: move item `work_item_id` to `to_status` only if it is still at
    (status, attempt). `sets` are the other columns the transition writes."""
    sql, params = sets
    return (
        f"UPDATE {ITEMS} SET status = %s, updated_at = {sql_now()}, {sql} "
        "WHERE id = %s AND status = %s AND attempt = %s",
        [to_status, *params, work_item_id, status, attempt],
    )


def _release_order_sql() -> str:
    """The release order (scheduling/services/ordering.py). PostgreSQL sorts NULLs
    last in ascending order, as the release index does; SQLite sorts them first."""
    urgent = "w.urgent_at" if connection.vendor == "postgresql" else "w.urgent_at IS NULL, w.urgent_at"
    return f"ORDER BY w.effective_priority DESC, {urgent}, w.fair_seq, w.id"


def _releasable(queue: str) -> Statement:
    """Pending items of `queue` that nothing but room holds back: no unfinished
    dependencies, due (not_before), work type not paused."""
    return (
        f"w.queue = %s AND w.status = %s AND w.blocked_reason = '' "
        f"AND (w.not_before IS NULL OR w.not_before <= {sql_now()}) "
        f"AND w.work_type_id IN (SELECT t.name FROM {TYPES} t WHERE NOT t.paused)",
        [queue, S.PENDING],
    )


def _release_sets() -> str:
    """The UPDATE every release path starts with: pending -> queued (the first
    parameter) as the item's next attempt, dispatched now."""
    now = sql_now()
    return f"UPDATE {ITEMS} SET status = %s, attempt = attempt + 1, dispatched_at = {now}, updated_at = {now} "


def release_update(*, queue: str, window: int) -> Statement:
    """pending -> queued for the next items of `queue` that need no capabilities, as
    many as its window has room for (window minus queued and running), in release
    order, skipping rows a concurrent transition holds (PostgreSQL), each with its
    next attempt number. The caller holds the queue's release lock."""
    where, params = _releasable(queue)
    picked = (
        f"SELECT w.id FROM {ITEMS} w WHERE {where} AND w.requirements = '' {_release_order_sql()} "
        "LIMIT (SELECT CASE WHEN r.room > 0 THEN r.room ELSE 0 END FROM "
        f"(SELECT %s - {in_flight_sql('%s')} AS room) r)"
    )
    if connection.vendor == "postgresql":
        # ARRAY(...) runs the pick once (an InitPlan); as `id IN (...)` the planner may
        # rescan it per row (a semi join), and each rescan of the LIMIT picks again.
        where_moved = f"id = ANY(ARRAY({picked} FOR UPDATE OF w SKIP LOCKED))"
    else:
        where_moved = f"id IN ({picked})"  # SQLite: one writer at a time; the subquery runs once
    # The picked rows are the fence: locked with their status rechecked under the lock
    # (PostgreSQL), or read by the only writer (SQLite), so they are still pending.
    # Matching by id alone also keeps the planner on the primary key when its
    # statistics lag a large submission (a stale estimate chose a scan of every
    # pending row: 7.6 ms instead of 0.1 ms per release).
    return f"{_release_sets()}WHERE {where_moved}", [S.QUEUED, *params, window, queue, queue]


def release_candidates(*, queue: str, extra: str, limit: int) -> Statement:
    """The next releasable items of `queue` matching `extra` (an `AND ...` condition
    on `w`, whose parameters go before the last one, the LIMIT), in release order:
    id, effective_priority, urgent_at, fair_seq, work_type_id, requirements."""
    where, params = _releasable(queue)
    return (
        f"SELECT w.id, w.effective_priority, w.urgent_at, w.fair_seq, w.work_type_id, w.requirements "
        f"FROM {ITEMS} w WHERE {where}{extra} {_release_order_sql()} LIMIT %s",
        [*params, limit],
    )


def release_ids_update(ids: Sequence[int]) -> Statement:
    """pending -> queued for these items (picked under the queue's release lock);
    one that is no longer pending is left alone."""
    sets = _release_sets()
    if connection.vendor == "postgresql":
        # One array parameter: one prepared statement whatever the number of ids
        # (an IN list would prepare a new statement per length).
        return f"{sets}WHERE id = ANY(%s) AND status = %s", [S.QUEUED, list(ids), S.PENDING]
    marks = ", ".join(["%s"] * len(ids))
    return f"{sets}WHERE id IN ({marks}) AND status = %s", [S.QUEUED, *ids, S.PENDING]


def queue_lock_select(*, queue: str) -> Statement:
    """(paused, items needing capabilities are pending) of `queue`, taking the Queue
    row's lock on PostgreSQL: the release lock (see release._queue_lock)."""
    lock = " FOR UPDATE OF q" if connection.vendor == "postgresql" else ""
    return (
        f"SELECT q.paused, EXISTS (SELECT 1 FROM {ITEMS} w WHERE w.queue = %s AND w.status = %s "
        f"AND w.requirements <> '') FROM {QUEUES} q WHERE q.name = %s{lock}",
        [queue, S.PENDING, queue],
    )


def fair_seq_upsert(*, queue: str, submitter_key: int, count: int) -> Statement:
    """Reserve `count` fair-share turns for a submitter in `queue`, after
    max(the queue's virtual clock, their last turn); returns the last one reserved."""
    clocks = SubmitterClock._meta.db_table
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    return (
        f"INSERT INTO {clocks} (queue, submitter_key, last_seq) "
        f"VALUES (%s, %s, COALESCE((SELECT q.virtual_clock FROM {QUEUES} q WHERE q.name = %s), 0) + %s) "
        "ON CONFLICT (queue, submitter_key) DO UPDATE "
        f"SET last_seq = {greatest}({clocks}.last_seq, EXCLUDED.last_seq - %s) + %s "
        "RETURNING last_seq",
        [queue, submitter_key, queue, count, count, count],
    )


def in_flight_sql(queue: str, *, other_than: str = "") -> str:
    """SQL counting `queue`'s items in the broker window (queued + running), `queue`
    being SQL (a placeholder or a column), leaving out the row `other_than` names.

    Two equality counts, not `status IN (...)`: with both leading columns of the
    release index fixed, each is a short index range on any plan. As one IN list, a
    prepared statement's generic plan made while the table was empty kept status as
    a filter and visited every item of the queue on each finish (measured, B1:
    3,000 heap fetches and ~5 ms per succeed at 3,000 items)."""
    exclude = f" AND f.id <> {other_than}" if other_than else ""
    count = f"(SELECT COUNT(*) FROM {ITEMS} f WHERE f.queue = {queue} AND f.status = '{{}}'{exclude})"
    return f"({count.format(S.QUEUED)} + {count.format(S.RUNNING)})"


def in_flight_count(*, queue: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {in_flight_sql('%s')}", [queue, queue])
        return cursor.fetchone()[0]


def virtual_clock_step(*, queue: str) -> Statement:
    """Advance `queue`'s fair-share clock to the latest turn released (the rows in `moved`)."""
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    return (
        f"UPDATE {QUEUES} SET virtual_clock = {greatest}(virtual_clock, COALESCE("
        f"(SELECT MAX(w.fair_seq) FROM {ITEMS} w WHERE w.id IN (SELECT id FROM moved)), 0)) WHERE name = %s",
        [queue],
    )


class NamedStep(NamedTuple):
    """A follow-up whose rows later steps read by `name` (PostgreSQL only)."""

    name: str
    sql: str
    params: Sequence[Any]


# What a refill returns to the final SELECT: the released item's message (or NULLs).
REFILL_SELECTED = (
    "(SELECT id FROM refill) AS refill_id",
    "(SELECT attempt FROM refill) AS refill_attempt",
    "(SELECT budget_seconds FROM refill) AS refill_budget_seconds",
)


def refill_steps(*, queue: str, window: int, actor: str) -> list[NamedStep | Statement]:
    """PostgreSQL: release the next item of `queue` in the statement that finishes one
    (the row in `moved`), so a finish keeps the window full without a release of its
    own: no queue lock, no counting of room, no extra round trip or commit.

    One out, one in leaves the number in flight as it was, so this cannot overshoot
    the window however many finishes run at once; it only refills while the others
    in flight (moved.in_flight) are below `window`, so a window that shrank drains.
    It takes only what the common release path takes (no capabilities needed, no
    limited or paused type, queue not paused, no item needing capabilities pending
    ahead of it), in release order, skipping rows another transition holds. Anything
    else is left to the counted release (release._queue_release). The queue's
    fair-share clock advances unless another release holds its row at that moment;
    then it lags by that refill's turn until the next release advances it, so a
    submitter arriving meanwhile starts at most that many turns early."""
    where, params = _releasable(queue)
    picked = (
        f"SELECT w.id FROM {ITEMS} w WHERE {where} AND w.requirements = '' "
        f"AND w.work_type_id IN (SELECT t.name FROM {TYPES} t WHERE t.max_concurrency IS NULL "
        "AND t.rate_limit IS NULL) "
        "AND EXISTS (SELECT 1 FROM moved WHERE moved.in_flight < %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {QUEUES} q WHERE q.name = %s AND q.paused) "
        # The status as a literal: a prepared statement's generic plan can use the
        # partial index (status = 'pending' AND requirements <> '') only for a
        # predicate it can prove without the parameters; with `status = $n` it read
        # every pending item of the queue through the release index instead.
        f"AND NOT EXISTS (SELECT 1 FROM {ITEMS} n WHERE n.queue = %s AND n.status = '{S.PENDING}' "
        "AND n.requirements <> '') "
        f"{_release_order_sql()} LIMIT 1 FOR UPDATE OF w SKIP LOCKED"
    )
    release = NamedStep(
        "refill",
        f"{_release_sets()}WHERE id = ANY(ARRAY({picked})) RETURNING {', '.join(RELEASE_RETURNING)}",
        [S.QUEUED, *params, window, queue, queue],
    )
    event = event_step(
        from_status=S.PENDING, to_status=S.QUEUED, actor=actor, reason=f"released into queue {queue}", source="refill"
    )
    clock = (
        f"UPDATE {QUEUES} SET virtual_clock = GREATEST(virtual_clock, (SELECT fair_seq FROM refill)) "
        f"WHERE name IN (SELECT q.name FROM {QUEUES} q WHERE q.name = %s AND EXISTS (SELECT 1 FROM refill) "
        "FOR UPDATE OF q SKIP LOCKED)",
        [queue],
    )
    return [release, event, clock]


# Items of the same queue in the broker window (queued + running), other than the
# row itself: RETURNING sees the table before the update on PostgreSQL and after it
# on SQLite, so excluding the row gives the same count on both.
IN_FLIGHT_OTHERS = f"{in_flight_sql(f'{ITEMS}.queue', other_than=f'{ITEMS}.id')} AS in_flight"


# What a release returns per item: enough to publish it (budget -> time limits) in release order.
RELEASE_RETURNING = (
    "id",
    "attempt",
    f"COALESCE(budget_seconds, (SELECT t.budget_seconds FROM {TYPES} t WHERE t.name = {ITEMS}.work_type_id)) "
    "AS budget_seconds",
    "effective_priority",
    "urgent_at",
    "fair_seq",
)


def moved_run(
    update: Statement,
    *,
    returning: Sequence[str],
    steps: Sequence[Statement | NamedStep] = (),
    selected: Sequence[str] = (),
) -> list[tuple]:
    """Run `update` (an UPDATE of work items, without RETURNING) and the `steps` that
    read the rows it moved as `moved`. Returns the moved rows: `returning` (which
    starts with id, attempt) for each, then the `selected` expressions (PostgreSQL
    only: scalar subqueries over named steps). See the module docstring for the two paths."""
    if tuple(returning[:2]) != ("id", "attempt"):
        raise ValueError("returning must start with id, attempt")
    sql, params = update
    returned = f"{sql} RETURNING {', '.join(returning)}"
    if connection.vendor == "postgresql":
        named = [step if isinstance(step, NamedStep) else NamedStep(f"s{i}", *step) for i, step in enumerate(steps)]
        ctes = "".join(f", {step.name} AS ({step.sql})" for step in named)
        names = ", ".join([*(alias(column) for column in returning), *selected])
        return _pg_prepared_fetchall(
            f"WITH moved AS ({returned}){ctes} SELECT {names} FROM moved",
            [*params, *(param for step in named for param in step.params)],
        )
    if selected or any(isinstance(step, NamedStep) for step in steps):
        raise ValueError("named steps and selected expressions need PostgreSQL")
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(returned, params)
        rows = cursor.fetchall()
        if rows and steps:
            values = ", ".join(["(%s, %s)"] * len(rows))
            keys = [value for row in rows for value in row[:2]]
            for step, step_params in steps:
                cursor.execute(f"WITH moved(id, attempt) AS (VALUES {values}) {step}", [*keys, *step_params])
    return rows


def alias(column: str) -> str:
    """`expr AS name` -> name; a plain column is its own name."""
    return column.rsplit(" AS ", 1)[-1].strip()


def _pg_prepared_fetchall(sql: str, params: Sequence[Any]) -> list[tuple]:
    """Execute as a prepared statement (server-side binding) on Django's connection.

    Django's cursors bind parameters client-side, so PostgreSQL parses and plans
    every execution: measured 0.2-0.4 ms of server CPU per transition. psycopg
    prepares the statement once per connection and reuses it. (Not for
    transaction-pooling proxies such as PgBouncer in transaction mode.)"""
    with connection.cursor() as wrapper:  # Django's health check, connect, thread check
        connection.validate_no_broken_transaction()
        with connection.wrap_database_errors, psycopg.Cursor(wrapper.cursor.connection) as cursor:
            cursor.execute(sql, params, prepare=True)
            return cursor.fetchall()
