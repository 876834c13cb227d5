"""What the worker knows of limits: its tasks' declared limits, written once, and whether
any limit exists now, read again at most every `REFRESH` seconds.

The plain claim always passes limited jobs over (data/claims.py). While a limit exists
(a task declared with one, by this worker or another; a queue given `--max-running`),
each claim first takes the limited jobs within their limits (data/limits.py), then the
others; while none does, that first step is skipped. A limit added is seen within
`REFRESH`: its jobs wait that long at most, and are never claimed over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pgjobs.data.limits import LimitStatements
from pgjobs.limits import TaskLimits

REFRESH = 1.0  # seconds between two reads of whether any limit exists


class LimitsWatch:
    """Declares `declared` ({task: limits or None}) on the first call, then says whether
    limits apply to this worker's claims."""

    def __init__(
        self,
        statements: LimitStatements,
        declared: Mapping[str, TaskLimits | None],
        *,
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.statements = statements
        self.declared = dict(declared)
        self.refresh = refresh
        self.clock = clock
        self._written = False
        self._active = False
        self._next_read = 0.0

    @property
    def known(self) -> bool:
        """Whether limits existed at the last read (no database access)."""
        return self._active

    def active(self, conn: Any) -> bool:
        """Whether any limit exists (on `conn`, the claim's connection)."""
        if not self._written:
            self.statements.declare(conn, self.declared)
            self._written = True
            self._next_read = 0.0
        now = self.clock()
        if now >= self._next_read:
            self._active = self.statements.any_limit(conn)
            self._next_read = now + self.refresh
        return self._active
