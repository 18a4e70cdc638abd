"""Background threads a process keeps one of, across Celery's prefork."""

from __future__ import annotations

import os
import threading
from typing import ClassVar, Self


class PerProcessThread(threading.Thread):
    """A daemon thread that each process starts once, on first use.

    A forked pool process inherits the parent's object but not its thread, so
    for_this_process() starts a new one when the pid has changed."""

    _instance: ClassVar[PerProcessThread | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.pid = os.getpid()

    @classmethod
    def for_this_process(cls) -> Self:
        with cls._instance_lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = cls()
                cls._instance.start()
            return cls._instance

    @classmethod
    def running_here(cls) -> Self | None:
        """This process's thread if it has started one (not one inherited through fork)."""
        instance = cls._instance
        return instance if instance is not None and instance.pid == os.getpid() else None
