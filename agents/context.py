"""The handler API: what a handler gets as `ctx`, and the lease keeper behind it."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection

from project.exceptions import Cancelled
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


class LeaseKeeper(threading.Thread):
    """Renews the attempt's lease while the handler runs; a failed renewal means the
    attempt lost the item (cancelled or superseded), so the handler is told to stop."""

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(name=f"lease-{ctx.work_item_id}-{ctx.attempt}", daemon=True)
        self.ctx = ctx
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(settings.WORK_ITEM_LEASE_RENEW_SECONDS):
            try:
                held = scheduling.work_item_lease_renew(work_item_id=self.ctx.work_item_id, attempt=self.ctx.attempt)
            except Exception:
                # A DB blip must not kill the keeper; the lease has slack for a few misses.
                self.ctx.logger.warning("lease renewal failed", exc_info=True)
                continue
            finally:
                # A connection per renewal (every few seconds) instead of one held per
                # running item: an agent with 50 long items would otherwise pin 100.
                connection.close()
            if not held:
                self.ctx.mark_cancelled()
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
