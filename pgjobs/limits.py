"""A task's concurrency and rate limits, as declared and checked at `@app.task`.

    @app.task(concurrency=2)                               # 2 running at once, all workers
    @app.task(concurrency=1, concurrency_key="account_id") # 1 at once per account_id
    @app.task(rate_limit="100/m")                          # 100 starts in any minute
    @app.task(rate_limit="5/s", rate_limit_key="host")    # per value of the argument host

The worker enforces them inside its claim (data/limits.py); this module only says what
a declaration means and refuses one that could not work, naming it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgjobs.bounds import INT_MAX
from pgjobs.errors import InvalidTaskError

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(s|m|h)\s*")


@dataclass(frozen=True)
class TaskLimits:
    """One task's limits; a `None` field is no limit (or, for a key, one bucket for the
    whole task). `rate_period` is in seconds."""

    concurrency: int | None = None
    concurrency_key: str | None = None
    rate_count: int | None = None
    rate_period: float | None = None
    rate_key: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The arguments whose values pick a job's buckets."""
        return tuple(k for k in (self.concurrency_key, self.rate_key) if k is not None)

    def describe(self) -> str:
        """`concurrency=2 per account_id, rate 100/60s`, for logs and errors."""
        parts = []
        if self.concurrency is not None:
            per = f" per {self.concurrency_key}" if self.concurrency_key else ""
            parts.append(f"concurrency={self.concurrency}{per}")
        if self.rate_count is not None:
            per = f" per {self.rate_key}" if self.rate_key else ""
            parts.append(f"rate {self.rate_count}/{self.rate_period:g}s{per}")
        return ", ".join(parts)


def parse_rate_limit(task: str, text: object) -> tuple[int, float]:
    """`"100/m"` → (100, 60.0); InvalidTaskError naming the task for anything else."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    count = int(match.group(1)) if match else 0
    if match is None or not 1 <= count <= INT_MAX:
        raise InvalidTaskError(
            f"rate_limit of task {task!r} must read N/s, N/m or N/h with N from 1 to "
            f"{INT_MAX}, got {text!r}"
        )
    return count, PERIODS[match.group(2)]


def declare_limits(
    task: str,
    func: Callable[..., Any],
    *,
    concurrency: int | None,
    concurrency_key: str | None,
    rate_limit: str | None,
    rate_limit_key: str | None,
) -> TaskLimits | None:
    """The limits of task `task` (None when it has none), checked against its function:
    a key must name one of its arguments, and a key needs its limit."""
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int)
        or not 1 <= concurrency <= INT_MAX
    ):  # fmt: skip
        raise InvalidTaskError(
            f"concurrency of task {task!r} must be an integer from 1 to {INT_MAX}, "
            f"got {concurrency!r}"
        )
    if concurrency_key is not None and concurrency is None:
        raise InvalidTaskError(f"task {task!r} has a concurrency_key but no concurrency")
    if rate_limit_key is not None and rate_limit is None:
        raise InvalidTaskError(f"task {task!r} has a rate_limit_key but no rate_limit")
    rate = parse_rate_limit(task, rate_limit) if rate_limit is not None else (None, None)
    for name, key in (("concurrency_key", concurrency_key), ("rate_limit_key", rate_limit_key)):
        if key is not None:
            _check_key(task, func, name, key)
    if concurrency is None and rate_limit is None:
        return None
    return TaskLimits(concurrency, concurrency_key, rate[0], rate[1], rate_limit_key)


def _check_key(task: str, func: Callable[..., Any], option: str, key: object) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidTaskError(f"{option} of task {task!r} must be an argument name, got {key!r}")
    parameters = inspect.signature(func).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = parameters.get(key)
    if not takes_any and (named is None or named.kind is inspect.Parameter.POSITIONAL_ONLY):
        raise InvalidTaskError(
            f"{option} of task {task!r} is {key!r}, which is not an argument of "
            f"{getattr(func, '__qualname__', func)!r}"
        )
