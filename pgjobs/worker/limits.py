"""What the worker knows of limits: its tasks' declared limits, written once, and whether
any limit exists now, read again at most every `REFRESH` seconds.

The plain claim always passes limited jobs over (data/claims.py). While a limit exists
(a task declared with one, by this worker or another; a queue given `--max-running`),
each claim first takes the limited jobs within their limits (data/limits.py), then the
others; while none does, that first step is skipped. A limit added is seen within
`REFRESH`: its jobs wait that long at most, and are never claimed over it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
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
        # Whether a claim of limited jobs may find any: cleared by one that found none
        # (it read every waiting job to know), set again by what may change that: a
        # NOTIFY (jobs inserted or put back), an outcome of a limited job (a slot
        # freed), and every `refresh` (a rate window moved on; a limit changed).
        self.due = True
        self._held: set[int] = set()  # ids of the limited jobs this worker claimed
        self._lock = threading.Lock()  # the fetcher adds to _held, the completer removes

    def active(self, conn: Any) -> bool:
        """Whether any limit exists, as last read (on `conn`, the claim's connection: the
        first call declares this worker's limits and reads at once)."""
        if not self._written:
            self.statements.declare(conn, self.declared)
            self._written = True
            self.read(conn)
        return self._active

    def read_due(self) -> bool:
        """Whether `refresh` seconds passed since the last read."""
        return self.clock() >= self._next_read

    def read(self, conn: Any) -> bool:
        """Read again whether any limit exists; True when limits just appeared.

        The fetcher reads after a claim rather than before it, so that a job's pickup
        never waits for this read: a limit set meanwhile is missed by one claim at most,
        which passes the limited jobs over all the same (data/claims.py)."""
        before = self._active
        self._active = self.statements.any_limit(conn)
        self._next_read = self.clock() + self.refresh
        self.due = True
        return self._active and not before

    def claimed(self, ids: Iterable[int], *, found: bool) -> None:
        """A claim of limited jobs took `ids`; `found`: it found any to take."""
        with self._lock:
            self._held.update(ids)
        self.due = found

    def holds(self, job_id: int) -> bool:
        """Whether `job_id` is a limited job this worker claimed and has not settled:
        its outcome frees a slot, so the completer writes it at once."""
        return job_id in self._held

    def wake(self) -> None:
        """Something may have made limited jobs claimable: try at the next claim."""
        self.due = True

    def released(self, ids: Iterable[int]) -> bool:
        """Outcomes of `ids` were written: whether any was a limited job of ours (its
        slot is free now, and the claim is due again)."""
        with self._lock:
            freed = self._held.intersection(ids)
            self._held -= freed
        if freed:
            self.due = True
        return bool(freed)
