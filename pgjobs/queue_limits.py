"""Back-pressure: an enqueue into a queue holding `max_waiting` waiting jobs raises QueueFull.

Counting a queue's waiting jobs on every enqueue would make enqueue slower as the queue
grows. Instead each App keeps, per process:

- the limits (`{queue: max_waiting}` of the queues that have one), read in one query at
  most once a second, so a queue without a limit costs a dictionary lookup;
- for each limited queue it enqueues into, the number of waiting jobs, counted at most
  once a second and never past the limit (the count reads at most `max_waiting` entries
  of the fetch index), plus the jobs this process enqueued since.

A count of many waiting jobs under a high limit takes a while (a million index entries,
about a third of a second), so a count is kept for a hundred times as long as it took
when that is longer than a second: counting never takes more than about 1 % of a
producer's time. So the check costs the same at a hundred waiting jobs as at ten
million. The price is a count up to a second old (longer only for such slow counts):
jobs other processes enqueued meanwhile are not in it (a queue can go over its limit by
what they enqueue in that time), nor jobs that workers took (an enqueue can be refused
for that long after room opened), and a new or changed limit applies within a second.

The check is a generator of the reads it needs (`_steps`), so that the synchronous
`check` here and an asynchronous caller can run the same logic on their connections.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgjobs.errors import QueueFull

if TYPE_CHECKING:
    from pgjobs.async_db import AsyncDatabase
    from pgjobs.db import CallerConnection, Database
    from pgjobs.enqueue import JobRow
    from pgjobs.store import Store

# How old the limits and the counts may get before they are read again, in seconds.
MAX_AGE = 1.0
# A count is kept at least this many times as long as it took to take.
COUNT_KEPT_PER_SECOND_SPENT = 100


@dataclass(frozen=True)
class ReadLimits:
    """A read the check needs: `store.queue_limits(conn)`."""


@dataclass(frozen=True)
class CountWaiting:
    """A read the check needs: `store.count_waiting(conn, queue, up_to=up_to)`."""

    queue: str
    up_to: int


Read = ReadLimits | CountWaiting
Steps = Generator[Read, Any, None]


@dataclass
class _Count:
    waiting: int
    counted_at: float
    kept_for: float  # seconds after `counted_at` that the count is used


class QueueLimits:
    """One App's view of the queues' limits and waiting counts; safe across threads."""

    def __init__(self, *, max_age: float = MAX_AGE, clock: Callable[[], float] = time.monotonic):
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._schema: str | None = None
        self._limits: dict[str, int] = {}
        self._limits_read_at = -math.inf
        self._counts: dict[str, _Count] = {}

    def check(
        self,
        conn: CallerConnection,
        database: Database,
        store: Store,
        rows: Sequence[JobRow],
    ) -> None:
        """Raise `QueueFull` when any row's queue would go past its limit; all or nothing.

        Reads run on `conn`, in the caller's transaction, or with None on pgjobs' pool.
        When the rows are let through they count as waiting from now on.
        """
        if self._nothing_to_check(store.schema, rows):
            return
        steps = self.steps(store.schema, rows)
        try:
            read = next(steps)
            while True:
                read = steps.send(_run(read, conn, database, store))
        except StopIteration:
            return

    async def check_async(
        self,
        conn: CallerConnection,
        database: AsyncDatabase,
        store: Store,
        rows: Sequence[JobRow],
    ) -> None:
        """`check` for `enqueue_async`: the reads run on an async connection (or pool)."""
        if self._nothing_to_check(store.schema, rows):
            return
        steps = self.steps(store.schema, rows)
        try:
            read = next(steps)
            while True:
                read = steps.send(await _run_async(read, conn, database, store))
        except StopIteration:
            return

    def any_limit(self, conn: CallerConnection, database: Database, store: Store) -> bool:
        """Whether any queue has a limit, from limits read at most `max_age` ago (read on
        `conn` as `check` would). A bulk enqueue that is told no can skip the check."""
        self.check(conn, database, store, ())
        return bool(self._limits)

    async def any_limit_async(self, conn: Any, database: AsyncDatabase, store: Store) -> bool:
        """`any_limit` for async callers."""
        await self.check_async(conn, database, store, ())
        return bool(self._limits)

    def _nothing_to_check(self, schema: str, rows: Sequence[JobRow]) -> bool:
        """The common case, without a lock or a read: none of the rows' queues has a limit."""
        if schema != self._schema or self.clock() - self._limits_read_at >= self.max_age:
            return False
        limits = self._limits
        return not limits or not any(row.queue in limits for row in rows)

    def steps(self, schema: str, rows: Sequence[JobRow]) -> Steps:
        """The check as a generator: it yields each read it needs and is sent the result."""
        now = self.clock()
        if schema != self._schema or now - self._limits_read_at >= self.max_age:
            limits: dict[str, int] = yield ReadLimits()
            self._remember_limits(schema, limits, now)
        limits = self._limits
        adding = Counter(row.queue for row in rows if row.queue in limits)
        counts: dict[str, _Count] = {}
        for queue in adding:
            count = self._counts.get(queue)
            if count is None or now - count.counted_at >= count.kept_for:
                waiting: int = yield CountWaiting(queue, limits[queue])
                took = self.clock() - now
                count = _Count(waiting, now, max(self.max_age, took * COUNT_KEPT_PER_SECOND_SPENT))
                with self._lock:
                    self._counts[queue] = count
            counts[queue] = count
        with self._lock:
            for queue, more in adding.items():
                if counts[queue].waiting + more > limits[queue]:
                    raise QueueFull(queue, limits[queue], counts[queue].waiting)
            for queue, more in adding.items():
                counts[queue].waiting += more

    def _remember_limits(self, schema: str, limits: dict[str, int], now: float) -> None:
        with self._lock:
            if schema != self._schema:
                self._schema = schema
                self._counts.clear()
            # A count taken up to an older limit says nothing about a higher one.
            for queue in list(self._counts):
                if self._limits.get(queue) != limits.get(queue):
                    del self._counts[queue]
            self._limits = limits
            self._limits_read_at = now


def _run(read: Read, conn: CallerConnection, database: Database, store: Store) -> Any:
    if isinstance(read, ReadLimits):
        return database.run_on(conn, store.queue_limits)
    return database.run_on(conn, lambda on: store.count_waiting(on, read.queue, up_to=read.up_to))


async def _run_async(read: Read, conn: Any, database: AsyncDatabase, store: Store) -> Any:
    if isinstance(read, ReadLimits):
        return await database.run_on(conn, store.queue_limits_async)
    return await database.run_on(
        conn, lambda on: store.count_waiting_async(on, read.queue, up_to=read.up_to)
    )
