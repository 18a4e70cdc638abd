"""`make bench`: Shepherd against bare Celery on this machine, in the same run.

Starts the real processes it needs (celery workers, the supervisor loop) against
PostgreSQL, Redis and RabbitMQ, runs B1-B6, prints a table and writes
bench/results/latest.json. Comparisons run their sides in an order that rotates
round by round, on the same broker, pool (prefork), concurrency (2) and prefetch
(1), and report the median of the rounds with min-max. `--quick` is the small smoke run CI uses.

It uses its own database (shepherd_bench), Redis DBs 13-14 and RabbitMQ vhost
shepherd_bench, and never touches anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / "var" / "bench"
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/shepherd_bench")
BROKERS = {
    "redis": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
    "rabbitmq": os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/shepherd_bench"),
}
NODE = socket.gethostname()
COUNTER_URL = os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/14")
TARGETS = {
    "B1": "ratio >= 0.6",
    "B2": ">= 30,000 items/s",
    "B3": "<= 25 ms at 0 stale; grows with stale, not table size",
    "B4": "<= AGENT_DEAD_AFTER + SUPERVISOR_INTERVAL + 2 s",
    "B5": "submit->started p50 <= 15 ms",
    "B6": "<= 150 ms",
}


# ---------------------------------------------------------------------------
# Processes and environment
# ---------------------------------------------------------------------------
def env_for(broker_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": PG_URL,
        "BENCH_DATABASE_URL": PG_URL,
        "CELERY_BROKER_URL": broker_url,
        "BENCH_BROKER_URL": broker_url,
        "BENCH_COUNTER_URL": COUNTER_URL,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SHEPHERD_VAR_DIR": str(LOGS),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "SHEPHERD_LOG_LEVEL": "WARNING",
        **extra,
    }


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], app: str = "project") -> None:
        self.name = name
        self.app = app
        self.env = env
        self.log_path = LOGS / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        """Poll with `celery inspect ping` (workers log at WARNING, so no 'ready' line)."""
        deadline = time.monotonic() + timeout
        while True:
            ping = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    self.app,
                    "inspect",
                    "ping",
                    "-d",
                    f"{self.name}@{NODE}",
                    "--timeout",
                    "1",
                ],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if ping.returncode == 0 and "pong" in ping.stdout:
                return
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def worker(name: str, app: str, queues: str, env: dict[str, str], concurrency: int = 2, pool: str = "prefork") -> Proc:
    proc = Proc(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "-c",
            str(concurrency),
            "-P",
            pool,
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        env,
        app,
    )
    return proc


def child(name: str, env: dict[str, str], *args: str, timeout: float = 3600) -> dict:
    """Run one measurement in a fresh process (its own broker/env); it prints JSON last."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--child", name, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench child {name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare() -> None:
    import psycopg

    LOGS.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        name = PG_URL.rsplit("/", 1)[1]
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigint PRIMARY KEY, done boolean NOT NULL)")
    vhost = BROKERS["rabbitmq"].rsplit("/", 1)[1]
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", "-q", *command], capture_output=True, timeout=60)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env_for(BROKERS["redis"]), check=True)


def reset(broker_url: str | None = None) -> None:
    """Empty the bench database's Shepherd tables and the broker's bench queues."""
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE scheduling_workitemevent, scheduling_attempt, supervision_intervention, "
            "supervision_supervisorrun, supervision_supervisorlease, scheduling_workitem, agents_agent, "
            "bench_floor RESTART IDENTITY CASCADE"
        )
        # A pause one benchmark's supervisor made (or an operator's) must not hold up the next.
        conn.execute("UPDATE scheduling_worktype SET paused = false WHERE paused")
        conn.execute("UPDATE scheduling_queue SET paused = false WHERE paused")
    if broker_url is None:
        return
    if broker_url.startswith("redis"):
        import redis

        redis.Redis.from_url(broker_url).flushdb()
    else:
        from kombu import Connection

        with Connection(broker_url) as conn:
            channel = conn.default_channel
            for queue in ("default", "cpu", "supervisor", "bare"):
                with contextlib.suppress(Exception):
                    channel.queue_purge(queue)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


# ---------------------------------------------------------------------------
# Benchmarks (orchestrator side)
# ---------------------------------------------------------------------------
def b1_throughput(items: int, rounds: int) -> dict:
    """Three sides per round, their order rotating round by round: bare Celery
    no-ops, bare Celery tasks that each commit one UPDATE (the floor for recording
    every task durably), and Shepherd items."""
    out = {}
    sides = ("bare", "bare_update", "shepherd")
    for broker, url in BROKERS.items():
        reset(url)
        env = env_for(url)
        shepherd = worker("b1-shepherd", "project", "default", env)
        bare = worker("b1-bare", "bench.bare_app", "bare", env)
        try:
            shepherd.wait_ready()
            bare.wait_ready()
            rates: dict[str, list[float]] = {side: [] for side in sides}
            for round_ in range(rounds):
                for side in sides[round_ % 3 :] + sides[: round_ % 3]:
                    seconds = child(f"b1_{side}", env, str(items))["seconds"]
                    rates[side].append(items / seconds)
        finally:
            shepherd.stop()
            bare.stop()
        bare_s, floor_s, shep_s = (summary(rates[side]) for side in sides)
        out[broker] = {
            "bare_items_s": bare_s,
            "bare_update_items_s": floor_s,
            "shepherd_items_s": shep_s,
            "ratio": shep_s["median"] / bare_s["median"],
            "floor_ratio": floor_s["median"] / bare_s["median"],
        }
    return out


def b2_submission(items: int, rounds: int) -> dict:
    rates = []
    env = env_for(BROKERS["redis"])
    for _ in range(rounds):
        reset(BROKERS["redis"])
        rates.append(items / child("b2", env, str(items))["seconds"])
    return {"items": items, "items_s": summary(rates)}


def b3_tick(table_rows: int, stale_counts: list[int], rounds: int) -> dict:
    reset(BROKERS["redis"])
    return child("b3", env_for(BROKERS["redis"]), str(table_rows), ",".join(map(str, stale_counts)), str(rounds))


def b4_recovery(items: int, quick: bool) -> dict:
    """The victim alone takes every item; then a survivor with room for all of them
    starts (it must be idle, and both at once would exceed PostgreSQL's 100
    connections); then SIGKILL the victim's main process."""
    url = BROKERS["redis"]
    reset(url)
    clocks = (
        {"AGENT_HEARTBEAT_SECONDS": "0.5", "AGENT_DEAD_AFTER": "3", "SUPERVISOR_INTERVAL_SECONDS": "1"} if quick else {}
    )
    env = env_for(url, **clocks)
    victim = worker("b4-victim", "project", "default", env, concurrency=items)
    survivor = None
    supervisor = Proc("b4-supervise", [sys.executable, "manage.py", "supervise", "--loop"], env)
    try:
        victim.wait_ready()
        child("b4_load", env, str(items), str(victim.popen.pid), timeout=600)
        survivor = worker("b4-survivor", "project", "default", env, concurrency=items)
        survivor.wait_ready()
        result = child("b4_kill", env, str(victim.popen.pid), timeout=600)
    finally:
        for proc in (supervisor, survivor, victim):
            if proc is not None:
                proc.stop()
    return result


def b5_latency(samples: int) -> dict:
    url = BROKERS["redis"]
    reset(url)
    env = env_for(url)
    agent = worker("b5-agent", "project", "default", env)
    try:
        agent.wait_ready()
        return child("b5", env, str(samples))
    finally:
        agent.stop()


def b6_pages(table_rows: int, rounds: int) -> dict:
    reset(BROKERS["redis"])
    return child("b6", env_for(BROKERS["redis"]), str(table_rows), str(rounds))


# ---------------------------------------------------------------------------
# Children: each runs inside Django with its own broker settings
# ---------------------------------------------------------------------------
def _django() -> None:
    import django

    django.setup()


def _bulk_rows(total: int, status: str = "succeeded") -> None:
    """Insert `total` finished items with one INSERT ... SELECT (fast, PostgreSQL),
    then vacuum the table as autovacuum would."""
    from django.db import connection

    from scheduling.services import work_types_sync

    work_types_sync()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduling_workitem (work_type_id, queue, payload, status, blocked_reason, priority, attempt,
                max_attempts, requeue_count, progress, progress_message, cost_total, error, created_at, updated_at,
                dispatched_at, started_at, finished_at, idempotency_key, request_key)
            SELECT 'demo.noop', 'default', '{}', %s, '', 5, 1, 3, 0, 1.0, '', 0, '', now(), now(), now(), now(),
                now(), '', ''
            FROM generate_series(1, %s)
            """,
            [status, total],
        )
    # VACUUM, not only ANALYZE: a table that grew to this size in service has been
    # vacuumed by autovacuum (PostgreSQL 13+ also vacuums after inserts), which sets
    # the visibility map that index-only counts rely on. Without it the bench would
    # measure a state no real table keeps for more than a minute, with autovacuum
    # about to start on the same two cores mid-measurement.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) scheduling_workitem")


def _wait_finished(first_id: int, timeout: float = 3600) -> None:
    """Poll until none of the run's items is unfinished, then check they all succeeded.

    The poll is one EXISTS per live state, each an index probe (the release index
    for pending, the partial indexes of the others) that stops at the first live row.
    Not a COUNT of succeeded rows, which visited every finished row 20 times a
    second; and not one EXISTS over `status IN (...) AND id >= first`, which the
    planner ran as a walk of the primary key from `first` past every finished item
    (measured: 0.8 ms of CPU per item, taken from the agents on the same two cores
    while the bare side polls with a Redis GET)."""
    from django.db import connection

    statuses = ["pending", "queued", "running", "retry_wait"]
    probe = "EXISTS (SELECT 1 FROM scheduling_workitem WHERE queue = 'default' AND status = %s AND id >= %s)"
    live = "SELECT " + " OR ".join([probe] * len(statuses))
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(live, [value for status in statuses for value in (status, first_id)])
            if not cursor.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("items did not finish in time")
            time.sleep(0.05)


def _check_succeeded(first_id: int, count: int) -> None:
    from scheduling.models import WorkItem

    succeeded = WorkItem.objects.filter(pk__gte=first_id, status="succeeded").count()
    if succeeded != count:
        raise RuntimeError(f"{succeeded} of {count} items succeeded")


def child_b1_shepherd(items: str) -> dict:
    _django()
    from scheduling.services import work_items_submit_ids

    n = int(items)
    started = time.perf_counter()
    ids = work_items_submit_ids(work_type="demo.noop", payloads=[{}] * n)
    _wait_finished(ids[0])
    seconds = time.perf_counter() - started
    _check_succeeded(ids[0], n)
    return {"seconds": seconds}


def _bare_drain(n: int, send) -> float:
    """Publish n bare tasks with `send(producer, run, i)` and wait until all ran (Redis counter)."""
    import uuid

    import redis

    from bench.bare_app import app

    run = uuid.uuid4().hex
    counter = redis.Redis.from_url(COUNTER_URL)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            send(producer, run, i)
    while int(counter.get(f"bench:{run}") or 0) < n:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    counter.delete(f"bench:{run}")
    return seconds


def child_b1_bare(items: str) -> dict:
    from bench.bare_app import noop

    seconds = _bare_drain(int(items), lambda producer, run, i: noop.apply_async(args=[run], producer=producer))
    return {"seconds": seconds}


def child_b1_bare_update(items: str) -> dict:
    import psycopg

    from bench.bare_app import update

    n = int(items)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        first = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM bench_floor").fetchone()[0]
        # Cast: psycopg sends small ints as int2, and generate_series has no int2 form.
        insert = "INSERT INTO bench_floor (id, done) SELECT g, false FROM generate_series(%s::bigint, %s::bigint) g"
        conn.execute(insert, [first, first + n - 1])
        seconds = _bare_drain(n, lambda producer, run, i: update.apply_async(args=[run, first + i], producer=producer))
        done = conn.execute("SELECT COUNT(*) FROM bench_floor WHERE id >= %s AND done", [first]).fetchone()[0]
    if done != n:
        raise RuntimeError(f"{done} of {n} bare.update rows were marked done")
    return {"seconds": seconds}


def child_b2(items: str) -> dict:
    _django()
    from scheduling.services import work_items_submit_ids

    n = int(items)
    started = time.perf_counter()
    work_items_submit_ids(work_type="demo.noop", payloads=[{}] * n)
    return {"seconds": time.perf_counter() - started}


def child_b3(table_rows: str, stale_counts: str, rounds: str) -> dict:
    _django()
    from django.db.models.functions import Now

    from agents.models import Agent
    from project.dbclock import now_minus, now_plus
    from scheduling.models import Attempt, WorkItem
    from supervision.models import SupervisorLease
    from supervision.services import supervisor_tick

    _bulk_rows(int(table_rows))
    result = {"table_rows": int(table_rows), "scan_limit_per_monitor": 500, "ms_per_tick": {}}
    for stale in map(int, stale_counts.split(",")):
        times = []
        for _ in range(int(rounds)):
            WorkItem.objects.filter(status__in=["running", "retry_wait", "queued", "pending"]).delete()
            Attempt.objects.all().delete()
            agent = Agent.objects.create(
                name="stale@bench",
                hostname="bench",
                pid=1,
                queues=["default"],
                concurrency=1,
                last_heartbeat_at=now_minus(3600),
            )
            if stale:
                _bulk_rows(stale, status="succeeded")
                newest = WorkItem.objects.order_by("-id").values_list("id", flat=True)[:stale]
                WorkItem.objects.filter(pk__in=list(newest)).update(
                    status="running",
                    agent=agent,
                    lease_expires_at=now_plus(600),
                    heartbeat_at=Now(),
                    finished_at=None,
                )
            else:
                agent.delete()
            SupervisorLease.objects.update(expires_at=now_minus(1))
            started = time.perf_counter()
            supervisor_tick()
            times.append((time.perf_counter() - started) * 1000)
            # Items first: a tick fixes at most 500 per monitor, and deleting the agent
            # under still-running items would null their holder (a CHECK forbids that).
            WorkItem.objects.filter(status__in=["running", "retry_wait", "queued", "pending"]).delete()
            Agent.objects.all().delete()
        result["ms_per_tick"][str(stale)] = summary(times)
    return result


def child_b4_load(items: str, victim_pid: str) -> dict:
    _django()
    from agents.models import Agent
    from scheduling.models import WorkItem
    from scheduling.services import work_items_submit_ids

    n = int(items)
    victim = Agent.objects.get(pid=int(victim_pid), status="online")
    work_items_submit_ids(work_type="demo.sleep", payloads=[{"seconds": 3600}] * n)
    deadline = time.monotonic() + 300
    while WorkItem.objects.filter(status="running", agent=victim).count() < n:
        if time.monotonic() > deadline:
            raise RuntimeError("the victim never ran every item")
        time.sleep(0.2)
    return {"running_on_victim": n}


def child_b4_kill(victim_pid: str) -> dict:
    _django()
    from django.conf import settings

    from agents.models import Agent
    from project.dbclock import age_of
    from scheduling.models import Attempt, WorkItem

    victim = Agent.objects.get(pid=int(victim_pid), status="online")
    held = list(WorkItem.objects.filter(status="running", agent=victim).values_list("id", flat=True))
    beat_age = (
        Agent.objects.filter(pk=victim.pk).annotate(age=age_of("last_heartbeat_at")).values_list("age", flat=True)[0]
    )
    os.kill(int(victim_pid), signal.SIGKILL)
    killed_at = time.time()
    deadline = time.monotonic() + 300
    while Attempt.objects.filter(work_item__in=held, number=2).count() < len(held):
        if time.monotonic() > deadline:
            raise RuntimeError("held items were not running again in time")
        time.sleep(0.1)
    victim.refresh_from_db()
    restarts = Attempt.objects.filter(work_item__in=held, number=2).values_list("started_at", flat=True)
    return {
        "held_by_victim": len(held),
        "victim_heartbeat_age_at_kill_s": beat_age.total_seconds(),
        "slowest_from_last_heartbeat_s": max((t - victim.last_heartbeat_at).total_seconds() for t in restarts),
        "slowest_from_kill_s": max(t.timestamp() - killed_at for t in restarts),
        "bound_s": settings.AGENT_DEAD_AFTER + settings.SUPERVISOR_INTERVAL_SECONDS + 2,
    }


def child_b5(samples: str) -> dict:
    _django()
    from scheduling.models import Attempt, WorkItem
    from scheduling.services import work_item_submit

    started_ms, finished_ms = [], []
    for _ in range(int(samples)):
        t0 = time.time()
        item = work_item_submit(work_type="demo.noop")
        while not WorkItem.objects.filter(pk=item.pk, status="succeeded").exists():
            time.sleep(0.001)
        done = time.time()
        attempt = Attempt.objects.get(work_item=item)
        started_ms.append((attempt.started_at.timestamp() - t0) * 1000)
        finished_ms.append((done - t0) * 1000)

    def pct(values: list[float]) -> dict:
        ordered = sorted(values)
        return {"p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}

    return {
        "samples": int(samples),
        "submit_to_started_ms": pct(started_ms),
        "submit_to_succeeded_ms": pct(finished_ms),
    }


def child_b6(table_rows: str, rounds: str) -> dict:
    """Server time of the dashboard's overview and work-item list (a staff user, so
    every row counts), /metrics and `status --json`, in process through Django's
    test client: the request's whole handling, without network or browser."""
    _django()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from project.platform import platform_status

    _bulk_rows(int(table_rows))
    staff, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    client = Client()
    client.force_login(staff)
    pages = {
        "overview": lambda: client.get("/"),
        "work items": lambda: client.get("/items/"),
        "metrics": lambda: client.get("/metrics"),
        "status --json": platform_status,
    }
    measured = {}
    for name, fetch in pages.items():
        fetch()  # warm: first-request imports and template compilation are not page time
        times = []
        for _ in range(int(rounds)):
            started = time.perf_counter()
            response = fetch()
            times.append((time.perf_counter() - started) * 1000)
            if hasattr(response, "status_code") and response.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {response.status_code}")
        measured[name] = summary(times)
    return {"table_rows": int(table_rows), "pages_ms": measured, "ms": measured["overview"]}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def fmt(s: dict, unit: str = "") -> str:
    return f"{s['median']:.0f}{unit} ({s['min']:.0f}-{s['max']:.0f})"


def report(results: dict) -> str:
    lines = [f"{'bench':<5} {'what':<52} {'measured (median, min-max)':<42} target"]
    if "B1" in results:
        for broker, r in results["B1"].items():
            lines.append(
                f"{'B1':<5} {'noop throughput, ' + broker + ', shepherd / bare':<52} "
                f"{fmt(r['shepherd_items_s']) + ' / ' + fmt(r['bare_items_s']) + ' items/s':<42} "
                f"ratio {r['ratio']:.2f} (>= 0.6)"
            )
            if "bare_update_items_s" in r:
                lines.append(
                    f"{'B1':<5} {'  floor: bare task + one committed UPDATE, ' + broker:<52} "
                    f"{fmt(r['bare_update_items_s']) + ' items/s':<42} ratio {r['floor_ratio']:.2f}"
                )
    if "B2" in results:
        r = results["B2"]
        lines.append(
            f"{'B2':<5} {f'submit {r["items"]:,} items in one batch':<52} {fmt(r['items_s']) + ' items/s':<42} "
            f"{TARGETS['B2']}"
        )
    if "B3" in results:
        r = results["B3"]
        for stale, s in r["ms_per_tick"].items():
            lines.append(
                f"{'B3':<5} {f'tick, {r["table_rows"]:,} rows, {stale} stale':<52} "
                f"{s['median']:.1f} ms ({s['min']:.1f}-{s['max']:.1f}){'':<16} {TARGETS['B3'][:28]}"
            )
    if "B4" in results:
        r = results["B4"]
        lines.append(
            f"{'B4':<5} {f'recovery of {r["held_by_victim"]} running items after SIGKILL':<52} "
            f"{r['slowest_from_last_heartbeat_s']:.1f} s from last beat ({r['slowest_from_kill_s']:.1f} s from kill)"
            f"   <= {r['bound_s']:.0f} s"
        )
        if "victim_heartbeat_age_at_kill_s" in r:
            lines.append(
                f"{'':<5} {'(victim heartbeat age at the kill)':<52} {r['victim_heartbeat_age_at_kill_s']:.1f} s"
            )
    if "B5" in results:
        r = results["B5"]
        lines.append(
            f"{'B5':<5} {'latency submit->started p50 / p99':<52} "
            f"{r['submit_to_started_ms']['p50']:.1f} / {r['submit_to_started_ms']['p99']:.1f} ms{'':<26} "
            f"{TARGETS['B5']}"
        )
        lines.append(
            f"{'B5':<5} {'latency submit->succeeded p50 / p99':<52} "
            f"{r['submit_to_succeeded_ms']['p50']:.1f} / {r['submit_to_succeeded_ms']['p99']:.1f} ms"
        )
    if "B6" in results:
        r = results["B6"]
        for page, ms in r.get("pages_ms", {"status --json": r["ms"]}).items():
            lines.append(
                f"{'B6':<5} {f'{page} at {r["table_rows"]:,} rows':<52} "
                f"{ms['median']:.0f} ms ({ms['min']:.0f}-{ms['max']:.0f}){'':<24} "
                f"{TARGETS['B6']}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small smoke sizes (CI)")
    parser.add_argument("--only", default="B1,B2,B3,B4,B5,B6", help="comma list, e.g. B1,B5")
    parser.add_argument("--rounds", type=int, default=None)
    args, rest = parser.parse_known_args()
    if args.child:
        print(json.dumps(globals()[f"child_{args.child}"](*rest)))
        return
    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    sizes = {
        "b1": 300 if quick else 20_000,
        "b2": 5_000 if quick else 100_000,
        "b3": 20_000 if quick else 1_000_000,
        "b3_stale": [0, 10, 100] if quick else [0, 100, 10_000],
        "b4": 5 if quick else 50,
        "b5": 30 if quick else 300,
        "b6": 20_000 if quick else 1_000_000,
    }
    wanted = {name.strip().upper() for name in args.only.split(",")}
    prepare()
    out = RESULTS / ("quick.json" if quick else "latest.json")
    results: dict = {}
    if out.exists() and wanted != {"B1", "B2", "B3", "B4", "B5", "B6"}:
        results = json.loads(out.read_text())  # --only refreshes some entries of the last run
    results.update({"quick": quick, "rounds": rounds, "machine": {"cpus": os.cpu_count()}})
    failed = []
    steps = [
        ("B1", lambda: b1_throughput(sizes["b1"], rounds)),
        ("B2", lambda: b2_submission(sizes["b2"], rounds)),
        ("B3", lambda: b3_tick(sizes["b3"], sizes["b3_stale"], rounds)),
        ("B4", lambda: b4_recovery(sizes["b4"], quick)),
        ("B5", lambda: b5_latency(sizes["b5"])),
        ("B6", lambda: b6_pages(sizes["b6"], rounds)),
    ]
    for name, step in steps:
        if name not in wanted:
            continue
        print(f"running {name} ...", flush=True)
        started = time.monotonic()
        try:
            results[name] = step()
        except Exception as error:  # one broken benchmark must not lose the others' figures
            failed.append(name)
            results.pop(name, None)
            print(f"  {name} FAILED: {error}", flush=True)
        else:
            print(f"  {name} done in {time.monotonic() - started:.0f}s", flush=True)
        out.write_text(json.dumps(results, indent=2, default=str))
    reset()
    print("\n" + report(results))
    print(f"\nwrote {out.relative_to(ROOT)}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
