"""Bare Celery for comparison: the same broker, pool, concurrency, prefetch, acks and
task events as Shepherd's agents, and two tasks:

- `bare.noop` only counts itself (one Redis INCR);
- `bare.update` also marks its own row done with one UPDATE on PostgreSQL, committed
  (synchronous_commit as the server has it), on a connection each pool process keeps
  open, as a Django task with persistent connections would. It is the floor for any
  platform that records each task's end durably in a database: Shepherd writes twice
  per item (the claim and the finish)."""

import os

import redis
from celery import Celery

app = Celery("bare", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=int(os.environ.get("CELERY_WORKER_PREFETCH_MULTIPLIER", "1")),
    task_default_queue="bare",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # Task events exactly as Shepherd's settings have them (same variables, same defaults).
    worker_send_task_events=os.environ.get("CELERY_WORKER_SEND_TASK_EVENTS", "").lower() in {"1", "true", "yes", "on"},
    task_send_sent_event=os.environ.get("CELERY_TASK_SEND_SENT_EVENT", "").lower() in {"1", "true", "yes", "on"},
)
_counter: redis.Redis | None = None
_database = None


def _count(run: str) -> None:
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"])
    _counter.incr(f"bench:{run}")


@app.task(name="bare.noop")
def noop(run: str) -> None:
    _count(run)


@app.task(name="bare.update")
def update(run: str, row_id: int) -> None:
    global _database
    if _database is None:
        import psycopg

        _database = psycopg.connect(os.environ["BENCH_DATABASE_URL"], autocommit=True)
    _database.execute("UPDATE bench_floor SET done = true WHERE id = %s", [row_id], prepare=True)
    _count(run)
