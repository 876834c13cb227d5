"""Retry policy: how long a failed attempt waits before the next one.

A value, not a function of global state: the jitter source is passed in, so tests
check exact delays and workers use `random.random`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff, capped, with downward jitter.

    The delay before retry n (n = the attempt that just failed, from 1) is
    `min(cap, base * factor ** (n - 1))`, then reduced by up to `jitter` (a fraction)
    so that jobs that failed together do not all retry in the same instant. Jitter only
    shortens the delay, so the cap is a true upper bound. Defaults: 1 s, 2 s, 4 s, ...
    up to one hour, with up to 20 % jitter.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("Backoff needs base >= 0, cap >= 0, factor >= 1 and 0 <= jitter <= 1")

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        exponent = max(attempt - 1, 0)
        try:
            grown = self.base * float(self.factor) ** exponent
        except OverflowError:  # past the float range, so past any cap (unless base is 0)
            grown = math.inf if self.base > 0 else 0.0
        return min(self.cap, grown) * (1.0 - self.jitter * random())
