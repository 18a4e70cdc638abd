"""Retry spacing: a pure function, tested without a database."""

from __future__ import annotations

import random
from collections.abc import Callable


def retry_delay_seconds(*, attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with equal jitter: attempt 1 waits base/2..base, doubling, capped at `cap`.

    Half the delay is fixed so retries never bunch at zero; half is random so a
    burst of failures does not retry in lockstep.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2
