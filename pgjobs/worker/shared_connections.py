"""The connections the worker's busy parts share: one at rest, a few under load.

The fetcher, the completer, the readier, the heartbeat, the registry's beat and the
notification check each run a statement now and then. At rest they take turns on one
connection; in a drain, claims, outcome writes and readying run at the same time, each
on a connection of its own. So an idle worker holds one connection here, beside the
listener's and (on the maintenance leader alone) the maintenance group's.

- The connection returned last is lent first, so at rest one connection does all the
  work and any other one ages.
- It grows only on need: a part that finds every connection lent waits up to
  `GROW_AFTER` for one to come back before another is opened. Two statements that merely
  overlap at rest (a poll and a beat) share one connection; a drain's parallel
  statements get their own within milliseconds, once, and keep them while busy.
- It shrinks: a connection unused for `KEEP_IDLE` seconds is closed, but never the
  last one.
- `max_size` is the number of parts that use it, so no part ever waits for another's
  statement to end (an outcome write blocked on a row lock must not hold up the
  registry's beat, or the worker would look lost).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from pgjobs.worker.connection import Connections

# Seconds a part waits for a lent connection to come back before another is opened.
GROW_AFTER = 0.002
# Seconds a connection beyond the first may stay unused before it is closed.
KEEP_IDLE = 5.0
DEFAULT_MAX_SIZE = 6


class SharedConnections:
    """Autocommit connections from `connect`, lent for one operation at a time
    (`for_part`); `max_size`, `keep_idle` and `grow_after` may be set per instance."""

    max_size = DEFAULT_MAX_SIZE
    keep_idle = KEEP_IDLE
    grow_after = GROW_AFTER

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connect = connect
        self.clock = clock
        self._idle: list[tuple[float, psycopg.Connection[Any]]] = []  # (returned at, conn)
        self._open = 0  # lent, idle, or being opened
        self._closed = False
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)

    def for_part(self, name: str) -> Connections:
        """Where the part `name` runs its statements (its log lines carry the name)."""
        return _PartConnections(self, name)

    def take(self) -> psycopg.Connection[Any]:
        """The idle connection returned last; else, after waiting `grow_after` in vain
        (at once when none is open), a new one (may raise OperationalError)."""
        with self._returned:
            waiting_since: float | None = None
            while not self._idle:
                now = self.clock()
                if waiting_since is None:
                    waiting_since = now
                if self._open < self.max_size and (
                    self._open == 0 or now - waiting_since >= self.grow_after
                ):
                    self._open += 1
                    break
                self._returned.wait(max(self.grow_after - (now - waiting_since), 0.001))
            else:
                return self._idle.pop()[1]
        try:
            return self.connect()
        except BaseException:
            with self._returned:
                self._open -= 1
                self._returned.notify()
            raise

    def give_back(self, conn: psycopg.Connection[Any], *, broken: bool = False) -> None:
        """Return a lent connection; a broken one (or one left in a transaction) is closed,
        and so are those unused for `keep_idle` seconds, but one stays open."""
        closing = []
        with self._returned:
            if broken or self._closed or not _reusable(conn):
                closing.append(conn)
            else:
                now = self.clock()
                self._idle.append((now, conn))
                while self._open - len(closing) > 1 and now - self._idle[0][0] > self.keep_idle:
                    closing.append(self._idle.pop(0)[1])
            self._open -= len(closing)
            self._returned.notify()
        for unused in closing:
            with contextlib.suppress(Exception):  # a broken socket may fail to close too
                unused.close()

    def close(self) -> None:
        """Close the idle connections; those lent now close when given back."""
        with self._returned:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for _, conn in idle:
            with contextlib.suppress(Exception):
                conn.close()


def _reusable(conn: psycopg.Connection[Any]) -> bool:
    return not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE


class _PartConnections(Connections):
    """One part's view of the shared connections: its own name and outage warnings."""

    def __init__(self, shared: SharedConnections, name: str) -> None:
        super().__init__(name)
        self.shared = shared

    def _acquire(self) -> psycopg.Connection[Any]:
        return self.shared.take()

    def _release(self, conn: psycopg.Connection[Any], *, broken: bool) -> None:
        self.shared.give_back(conn, broken=broken)
