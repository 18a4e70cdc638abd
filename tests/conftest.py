"""Shared test harness: backend selection, real broker and process fixtures.

The backend comes from SHEPHERD_TEST_BACKEND (see project/settings_test.py). A
backend whose servers are unreachable skips every test that needs them, with
the reason, locally; under CI=true it fails the run instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# ---------------------------------------------------------------------------
# Backend reachability
# ---------------------------------------------------------------------------
def _tcp_reachable(url: str, default_port: int) -> str | None:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=3):
            return None
    except OSError as error:
        return f"{parsed.scheme}://{parsed.hostname}:{parsed.port or default_port} unreachable ({error})"


def _rabbitmq_vhost_ensure(url: str) -> str | None:
    """Our own vhost, so tests never take a running platform's messages."""
    vhost = urlparse(url).path.lstrip("/") or "/"
    if vhost == "/":
        return None
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return "rabbitmqctl not found: cannot create the test vhost"
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        result = subprocess.run([ctl, *command], capture_output=True, text=True, timeout=60)
        if result.returncode != 0 and "already_exists" not in result.stderr + result.stdout:
            return f"rabbitmqctl {' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}"
    return None


def _backend_problem() -> str | None:
    from django.conf import settings

    from project import settings_test

    if settings_test.BACKEND == "embedded":
        return None
    db = settings.DATABASES["default"]
    problem = _tcp_reachable(f"postgres://{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}", 5432)
    if problem:
        return f"PostgreSQL: {problem}"
    broker = settings.CELERY_BROKER_URL
    if broker.startswith("amqp"):
        return _tcp_reachable(broker, 5672) or _rabbitmq_vhost_ensure(broker)
    return _tcp_reachable(broker, 6379)


def pytest_collection_modifyitems(config, items):
    from project import settings_test

    for item in items:
        if "tests/unit/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.unit)
    problem = _backend_problem()
    if problem is None:
        return
    message = f"backend {settings_test.BACKEND} unavailable: {problem}"
    if IN_CI:
        raise pytest.UsageError(f"{message} (CI=true: an unreachable backend is a failure, not a skip)")
    skip = pytest.mark.skip(reason=message)
    for item in items:
        if "unit" not in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    from django.conf import settings

    from project import settings_test

    db = settings.DATABASES["default"]
    return (
        f"shepherd backend: {settings_test.BACKEND} (db {db['ENGINE'].rsplit('.', 1)[-1]}, "
        f"broker {settings.CELERY_BROKER_URL.split('://')[0]})"
    )


# ---------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------
def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.1, logs=None):
    """Poll until predicate() is truthy; fail with the last value seen (and logs)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    details = f"; last seen: {last!r}" if last is not None else ""
    if logs is not None:
        details += "\n" + logs.tails()
    pytest.fail(f"timed out after {timeout}s waiting for {what}{details}")


# ---------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def embedded_broker():
    """The embedded backend's private valkey-server (None on the other backends);
    chaos tests stop and start it."""
    from django.conf import settings

    from project import settings_test
    from tests.chaos.faults import ServerProcess, redis_ready

    if settings_test.BACKEND != "embedded":
        yield None
        return
    sock = settings.EMBEDDED_BROKER_SOCKET
    if sock.exists():
        sock.unlink()
    server = ServerProcess(
        "the embedded broker",
        [sys.executable, "-m", "project.embedded_broker"],
        settings.VAR_DIR / "valkey.log",
        redis_ready(unix_socket_path=str(sock)),
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings_test",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker_url(embedded_broker):
    """The session's broker; for the embedded backend, a private valkey-server."""
    from django.conf import settings

    return settings.CELERY_BROKER_URL


def broker_purge(url: str) -> None:
    """Empty this session's own broker namespace (its Redis DB / vhost queues)."""
    if url.startswith("amqp"):
        from project.celery import app
        from scheduling.routing import celery_task_queues

        with app.connection_for_write() as connection:
            channel = connection.default_channel
            for queue in celery_task_queues():
                queue(channel).declare()
                channel.queue_purge(queue.name)
        return
    import redis

    if url.startswith("redis+socket://"):
        client = redis.Redis(unix_socket_path=url.removeprefix("redis+socket://"))
    else:
        client = redis.Redis.from_url(url)
    client.flushdb()  # the session's own DB number (or its own embedded server)
    client.close()


@pytest.fixture
def broker(broker_url):
    broker_purge(broker_url)
    return broker_url


# ---------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------
class Proc:
    def __init__(self, name: str, popen: subprocess.Popen, log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int, *, group: bool = False) -> None:
        if group:
            os.killpg(self.popen.pid, sig)
        else:
            os.kill(self.popen.pid, sig)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        """Warm shutdown (SIGTERM); SIGKILL the whole group if it does not finish."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGCONT)
                self.signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # orphaned pool children too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


class Platform:
    """Starts real celery worker / beat / manage.py processes against the test DB."""

    def __init__(self, tmp_path: Path, db_name: str) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings_test",
            "SHEPHERD_TEST_DB_NAME": db_name,
            "PYTHONUNBUFFERED": "1",
            "CELERY_SKIP_CHECKS": "1",
        }

    def _spawn(self, name: str, args: list[str], extra_env: dict | None = None) -> Proc:
        log_path = self.tmp_path / f"{name}.log"
        log = open(log_path, "w")  # noqa: SIM115 - the child keeps its own descriptor
        popen = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(extra_env or {})},
            start_new_session=True,
        )
        log.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_worker(
        self,
        name: str,
        *,
        queues: str = "default,cpu",
        concurrency: int = 2,
        wait: bool = True,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "-c",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            *(extra_args or []),
        ]
        proc = self._spawn(name, args, env)
        if wait:
            self.wait_worker_ready(proc)
        return proc

    def wait_worker_ready(self, proc: Proc, timeout: float = 60) -> None:
        wait_until(
            lambda: " ready." in proc.log() or (not proc.alive() and "exited"),
            timeout=timeout,
            what=f"worker {proc.name} to be ready",
            logs=self,
        )
        if not proc.alive():
            pytest.fail(f"worker {proc.name} exited:\n{self.tails()}")

    def agent_for(self, proc: Proc):
        from agents.models import Agent

        return wait_until(
            lambda: Agent.objects.filter(pid=proc.pid).order_by("-id").first(),
            timeout=30,
            what=f"agent row for {proc.name}",
            logs=self,
        )

    def start_supervisor_loop(self) -> Proc:
        return self._spawn("supervise", [sys.executable, "manage.py", "supervise", "--loop"])

    def start_beat(self, name: str = "beat") -> Proc:
        return self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "project",
                "beat",
                "--loglevel",
                "INFO",
                "--pidfile=",
                f"--schedule={self.tmp_path / name}.schedule",
            ],
        )

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, work_type: str, payload: str = "{}", count: int = 1) -> list[int]:
        """Submit through `manage.py submit` (for tests whose own process must not
        need the broker or the database the platform uses)."""
        result = self.manage("submit", work_type, "--payload", payload, "--count", str(count), "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def tails(self, lines: int = 40) -> str:
        parts = []
        for proc in self.procs:
            tail = "\n".join(proc.log().splitlines()[-lines:])
            parts.append(f"----- {proc.name} (pid {proc.pid}, {'alive' if proc.alive() else 'exited'}) -----\n{tail}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _test_db_name() -> str:
    from django.db import connection

    return str(connection.settings_dict["NAME"])


@pytest.fixture
def platform(request, transactional_db, broker, tmp_path):
    """Real processes for one test; torn down (and their logs printed on failure)
    before the test database is flushed."""
    from supervision.services import supervisor_schedule_ensure

    supervisor_schedule_ensure()
    plat = Platform(tmp_path, _test_db_name())
    yield plat
    plat.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("\n" + plat.tails(80))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_sessionstart(session):
    from django.conf import settings

    results = settings.VAR_DIR / "chaos-results.jsonl"
    if results.exists():
        results.unlink()


def pytest_terminal_summary(terminalreporter):
    from django.conf import settings

    results = settings.VAR_DIR / "chaos-results.jsonl"
    if not results.exists():
        return
    terminalreporter.section("chaos results")
    terminalreporter.write_line(
        "lost: not finished once faults stopped; twice: items with more than one completion; recovery: slowest"
        " fault -> running again (or back to work), against the bound where there is one; requeued: slowest fault ->"
        " the supervisor failing the attempt for a retry"
    )
    header = (
        f"{'scenario':<44} {'backend':<18} {'items':>5} {'lost':>4} {'twice':>5} {'attempts':>8}"
        f" {'requeued s':>10} {'recovery s':>10} {'bound s':>7}"
    )
    terminalreporter.write_line(header)
    for line in results.read_text().splitlines():
        row = json.loads(line)
        recovery = "-" if row["slowest_recovery_s"] is None else f"{row['slowest_recovery_s']:.2f}"
        requeued = "-" if row.get("slowest_requeued_s") is None else f"{row['slowest_requeued_s']:.2f}"
        bound = row.get("recovery_bound_s")
        over = bound is not None and row["slowest_recovery_s"] is not None and row["slowest_recovery_s"] > bound
        terminalreporter.write_line(
            f"{row['scenario']:<44} {row['backend']:<18} {row['items']:>5} {row['lost']:>4} "
            f"{row['completed_twice']:>5} {row['attempts']:>8} {requeued:>10} {recovery:>10} "
            f"{'-' if bound is None else f'{bound:g}':>7}{' OVER' if over else ''}"
        )
