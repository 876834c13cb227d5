"""Retry policy: how long a failed attempt waits before the next one.

A value, not a function of global state: the jitter source is passed in, so tests
check exact delays and workers use `random.random`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pgjobs.bounds import MAX_DELAY_SECONDS, check_seconds


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
        # A retry's run_at is now + delay, and the delay never exceeds the cap: bounded
        # here, a cap cannot make the worker write a run_at PostgreSQL refuses.
        check_seconds("Backoff base", self.base, maximum=MAX_DELAY_SECONDS)
        check_seconds("Backoff cap", self.cap, maximum=MAX_DELAY_SECONDS)
        if not _is_number(self.factor) or not 1 <= self.factor < math.inf:
            raise ValueError(f"Backoff factor must be a finite number >= 1, got {self.factor!r}")
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff jitter must be from 0 to 1, got {self.jitter!r}")

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        exponent = max(attempt - 1, 0)
        try:
            grown = self.base * float(self.factor) ** exponent
        except OverflowError:  # past the float range, so past any cap (unless base is 0)
            grown = math.inf if self.base > 0 else 0.0
        return min(self.cap, grown) * (1.0 - self.jitter * random())


def check_backoff(backoff: object, error: type[Exception]) -> Backoff | None:
    """`backoff` if it is a `Backoff` or None, else `error`: at declaration, rather than
    in the worker's thread at the first failed attempt."""
    if backoff is None or isinstance(backoff, Backoff):
        return backoff
    raise error(
        f"backoff must be a pgjobs.Backoff, e.g. Backoff(base=5, cap=3600), got {backoff!r}"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
