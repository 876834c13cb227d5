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

The check is a plan (data/steps.py) of the reads it needs, run by the enqueue's own
plan on the caller's connection (or, with `conn=None`, in the one transaction of
pgjobs' pool that then inserts), synchronously or with asyncio alike.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pgjobs.data.producer import count_waiting, queue_limits
from pgjobs.data.sql import SchemaSQL
from pgjobs.data.steps import Plan
from pgjobs.errors import QueueFull
from pgjobs.types import JobRow

# How old the limits and the counts may get before they are read again, in seconds.
MAX_AGE = 1.0
# A count is kept at least this many times as long as it took to take.
COUNT_KEPT_PER_SECOND_SPENT = 100


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

    def check(self, sql: SchemaSQL, rows: Sequence[JobRow]) -> Plan[None]:
        """Raise `QueueFull` when any row's queue would go past its limit; all or nothing.

        When the rows are let through they count as waiting from now on.
        """
        if self._nothing_to_check(sql.schema, rows):
            return
        now = self.clock()
        if sql.schema != self._schema or now - self._limits_read_at >= self.max_age:
            self._remember_limits(sql.schema, (yield from queue_limits(sql)), now)
        limits = self._limits
        adding = Counter(row.queue for row in rows if row.queue in limits)
        counts: dict[str, _Count] = {}
        for queue in adding:
            count = self._counts.get(queue)
            if count is None or now - count.counted_at >= count.kept_for:
                waiting = yield from count_waiting(sql, queue, up_to=limits[queue])
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

    def any_limit(self, sql: SchemaSQL) -> Plan[bool]:
        """Whether any queue has a limit, from limits read at most `max_age` ago. A bulk
        enqueue that is told no can skip the check."""
        yield from self.check(sql, ())
        return bool(self._limits)

    def _nothing_to_check(self, schema: str, rows: Sequence[JobRow]) -> bool:
        """The common case, without a lock or a read: none of the rows' queues has a limit."""
        if schema != self._schema or self.clock() - self._limits_read_at >= self.max_age:
            return False
        limits = self._limits
        return not limits or not any(row.queue in limits for row in rows)

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
