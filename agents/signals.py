"""Worker lifecycle -> Agent row: register, heartbeat, draining, offline.

Connected from project/celery.py so the handlers are in place before the worker
sends worker_init; model imports stay inside the handlers for that reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

from celery.signals import (
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

logger = logging.getLogger("shepherd.agent")
_heartbeat: _HeartbeatThread | None = None


class _HeartbeatThread(threading.Thread):
    """Beats from the worker's main process, so a busy pool never silences it;
    a wedged pool child is caught by its item lease instead."""

    def __init__(self, agent_id: int, interval: float) -> None:
        super().__init__(name="shepherd-heartbeat", daemon=True)
        self.agent_id = agent_id
        self.interval = interval
        self.stop_event = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from agents.services import agent_heartbeat

        try:
            while not self.stop_event.wait(self.interval):
                try:
                    if not agent_heartbeat(agent_id=self.agent_id):
                        logger.warning("agent %s is offline; heartbeat stopped", self.agent_id)
                        return
                except Exception:
                    logger.warning("heartbeat failed; will try again", exc_info=True)
                    connection.close()
        finally:
            connection.close()


def _agent_id() -> int | None:
    from agents import services

    return services._current_agent.pk if services._current_agent else None


@worker_init.connect
def _register(sender, **kwargs) -> None:
    from django.db import connection

    from agents.services import agent_register
    from project.version import VERSION
    from scheduling.routing import WORK_QUEUES

    consumed = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    work_queues = [name for name in consumed if name in WORK_QUEUES]
    if not work_queues:
        logger.info("worker %s consumes no work queue: not an agent", sender.hostname)
        return
    capabilities = [c.strip() for c in os.environ.get("SHEPHERD_AGENT_CAPABILITIES", "").split(",") if c.strip()]
    for delay in (0, 1, 2, 4, 8):
        time.sleep(delay)
        try:
            agent_register(
                name=sender.hostname,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                queues=work_queues,
                concurrency=_pool_size(sender),
                capabilities=capabilities,
                version=VERSION,
            )
            break
        except Exception:
            logger.warning("agent registration failed; retrying", exc_info=True)
    else:
        raise RuntimeError("could not register the agent: is the database reachable?")
    # The pool forks after this; children must not share this process's DB socket.
    connection.close()
    # Beat from now on, not from worker_ready: forking a large pool takes seconds
    # (measured: 12 s for 50 processes here), long enough to be declared dead. The
    # children inherit no lock this thread holds: its DB connection is thread-local
    # and Python reinitialises logging's locks at fork.
    _heartbeat_start(_agent_id())


def _pool_size(worker) -> int:
    """Pool processes the agent may run: with --autoscale=MAX,MIN the maximum (the
    autoscaler grows the pool when messages wait, and the queue window, two per
    process, is what lets them wait), else --concurrency."""
    autoscale = (getattr(worker, "options", None) or {}).get("autoscale") or getattr(worker, "autoscale", None)
    if isinstance(autoscale, str):
        autoscale = [int(part) for part in autoscale.split(",") if part.strip()]
    if autoscale:
        return max(int(autoscale[0]), 1)
    return int(worker.concurrency or 1)


def _heartbeat_start(agent_id: int) -> None:
    global _heartbeat
    from django.conf import settings

    _heartbeat = _HeartbeatThread(agent_id, settings.AGENT_HEARTBEAT_SECONDS)
    _heartbeat.start()


@worker_ready.connect
def _beat_when_ready(sender, **kwargs) -> None:
    from django.db import connection

    from agents.services import agent_heartbeat

    agent_id = _agent_id()
    if agent_id is not None:
        with contextlib.suppress(Exception):  # the thread beats again within an interval
            agent_heartbeat(agent_id=agent_id)
        # Pool processes forked later (replacements) must not inherit an open socket.
        connection.close()


@worker_shutting_down.connect
def _drain(sig=None, how=None, exitcode=None, **kwargs) -> None:
    from agents.services import agent_mark_draining

    agent_id = _agent_id()
    if agent_id is not None:
        try:
            agent_mark_draining(agent_id=agent_id)
        except Exception:
            logger.warning("could not mark agent draining", exc_info=True)


@worker_shutdown.connect
def _offline(sender=None, **kwargs) -> None:
    from agents.services import agent_mark_offline
    from scheduling.services.release import publisher_flush

    publisher_flush()  # the solo and threads pools run tasks, and so refills, in this process

    agent_id = _agent_id()
    if agent_id is None:
        return
    if _heartbeat is not None:
        _heartbeat.stop_event.set()
    try:
        agent_mark_offline(agent_id=agent_id)
    except Exception:
        logger.warning("could not mark agent offline", exc_info=True)


@worker_process_shutdown.connect
def _publisher_flush(**kwargs) -> None:
    """A pool process about to exit sends the refill messages its publisher still holds.
    One killed (SIGKILL, hard time limit) loses them; the dispatch monitor republishes."""
    from scheduling.services.release import publisher_flush

    publisher_flush()
