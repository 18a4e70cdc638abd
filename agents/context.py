"""The handler API: what a handler gets as `ctx`, and the lease keeper behind it."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection

from project.exceptions import Cancelled
from project.threads import PerProcessThread
from scheduling import services as scheduling


class HandlerContext:
    """Passed to every handler as `ctx`.

    - `ctx.progress(fraction, message)` reports progress (0.0-1.0).
    - `ctx.charge(amount, unit)` adds to the item's cost.
    - `ctx.cancelled` turns True when the item was cancelled or this attempt was
      superseded; `ctx.check_cancelled()` raises Cancelled then; `ctx.sleep(s)`
      sleeps but wakes and raises at once on cancellation.
    - `ctx.attempt` is this attempt's number (1 for the first), `ctx.logger` a logger.
    """

    def __init__(self, *, work_item_id: int, attempt: int, work_type: str) -> None:
        self.work_item_id = work_item_id
        self.attempt = attempt
        self.work_type = work_type
        self.logger = logging.getLogger(f"shepherd.handler.{work_type}")
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def mark_cancelled(self) -> None:
        self._cancelled.set()

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled(f"work item {self.work_item_id} attempt {self.attempt} no longer holds the item")

    def sleep(self, seconds: float) -> None:
        if self._cancelled.wait(timeout=max(0.0, seconds)):
            self.check_cancelled()

    def progress(self, fraction: float, message: str = "") -> None:
        held = scheduling.work_item_progress_report(
            work_item_id=self.work_item_id, attempt=self.attempt, fraction=fraction, message=message
        )
        if not held:
            self.mark_cancelled()

    def charge(self, amount: float, unit: str = "units") -> None:
        held = scheduling.work_item_charge(work_item_id=self.work_item_id, attempt=self.attempt, amount=amount)
        if not held:
            self.mark_cancelled()


class LeaseKeeper:
    """Renews the attempt's lease while the handler runs; a failed renewal means the
    attempt lost the item (cancelled or superseded), so the handler is told to stop.

    start() and stop() only register the attempt with one renewer thread per
    process: starting a thread per item cost ~1 ms of latency per item (measured,
    B1), and most items finish long before their first renewal is due."""

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx

    def start(self) -> None:
        _LeaseRenewer.for_this_process().watch(self.ctx)

    def stop(self) -> None:
        _LeaseRenewer.for_this_process().unwatch(self.ctx)


class _LeaseRenewer(PerProcessThread):
    """The per-process thread behind LeaseKeeper: renews every watched attempt each
    WORK_ITEM_LEASE_RENEW_SECONDS from when it started."""

    def __init__(self) -> None:
        super().__init__(name="lease-renewer")
        self._due: dict[HandlerContext, float] = {}
        self._changed = threading.Condition()

    def watch(self, ctx: HandlerContext) -> None:
        # No notify: the thread never sleeps longer than one renewal interval, so it
        # wakes by this attempt's first due time anyway. Waking it for every item cost
        # a thread switch per item on the hot path (B1).
        with self._changed:
            self._due[ctx] = time.monotonic() + settings.WORK_ITEM_LEASE_RENEW_SECONDS

    def unwatch(self, ctx: HandlerContext) -> None:
        with self._changed:
            self._due.pop(ctx, None)

    def run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [ctx for ctx, at in self._due.items() if at <= now]
                if not due:
                    idle = now + settings.WORK_ITEM_LEASE_RENEW_SECONDS
                    self._changed.wait(timeout=min(self._due.values(), default=idle) - now)
                    continue
                for ctx in due:
                    self._due[ctx] = now + settings.WORK_ITEM_LEASE_RENEW_SECONDS
            for ctx in due:
                self._renew(ctx)

    def _renew(self, ctx: HandlerContext) -> None:
        try:
            held = scheduling.work_item_lease_renew(work_item_id=ctx.work_item_id, attempt=ctx.attempt)
        except Exception:
            # A DB blip must not kill the renewer; the lease has slack for a few misses.
            ctx.logger.warning("lease renewal failed", exc_info=True)
            return
        finally:
            # A connection per renewal (every few seconds) instead of one held per
            # running item: an agent with 50 long items would otherwise pin 100.
            connection.close()
        if not held:
            ctx.mark_cancelled()
            self.unwatch(ctx)
