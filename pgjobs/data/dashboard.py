"""The web dashboard's reads of the overview and queues pages, each bounded so that a page
costs about the same with a million jobs in the table as with a hundred.

No exact count over the whole table: a state's count stops at a cap (the dashboard shows
"10,000+") and is then replaced by the planner's estimate when it has one (the row
counts of the state's history partitions). Counts and charts read through indexes:
waiting jobs through the fetch index, running ones through the running index, finished
ones through the history's finished index, by `finished_at`, each read capped; the
caller learns when a cap cut a read short.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgjobs.data.group import StatementGroup
from pgjobs.types import STATES

# How many rows of a state a count reads at most.
COUNT_CAP = 10_000
# Up to this many rows in the table, every state is counted (a scan of it is quick);
# beyond, the states without an index of their own are estimated from the statistics.
SMALL_TABLE = 100_000
# The finished jobs one page view reads at most for the charts, and for the run times.
CHART_SCAN = 40_000
RUN_TIMES_SCAN = 10_000
# The (queue, priority) pairs the queue latency visits at most.
LATENCY_GROUPS = 1_000

# Waiting and running jobs are counted (up to the cap) through their partial indexes,
# blocked ones in jobs_live. Finished jobs are in the history's partitions, one per state
# and day: in a small history they are counted too, in a big one they are the sum of the
# planner's row counts (`pg_class.reltuples`) of their state's partitions. The CASE runs
# a count only where it is asked for.
STATE_COUNTS = """
WITH estimates AS (
    SELECT s.state, (
        SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(%(history)s)
          AND c.relname LIKE 'jobs!_history!_' || s.state || '!_%%' ESCAPE '!'
    ) AS estimated
    FROM unnest(%(states)s::text[]) AS s(state)
)
SELECT e.state,
       CASE e.state
           WHEN 'available' THEN (SELECT count(*) FROM (
               SELECT 1 FROM {live} WHERE state = 'available' LIMIT %(cap)s + 1) AS c)
           WHEN 'running' THEN (SELECT count(*) FROM (
               SELECT 1 FROM {live} WHERE state = 'running' LIMIT %(cap)s + 1) AS c)
           WHEN 'blocked' THEN (SELECT count(*) FROM (
               SELECT 1 FROM {live} WHERE state = 'blocked' LIMIT %(cap)s + 1) AS c)
           ELSE CASE WHEN e.estimated <= %(small)s THEN (SELECT count(*) FROM (
               SELECT 1 FROM {jobs} AS j WHERE j.state = e.state LIMIT %(cap)s + 1) AS c) END
       END AS counted,
       e.estimated
FROM estimates AS e
"""

NOW = "SELECT now()"

# Finished jobs per bin, newest first, at most `cap` rows read (through the finished
# index, backwards; LIMIT NULL reads all): when the cap stops the read, its oldest bin
# is partial and the caller knows the bins before it were not counted.
FINISHED_BINS = """
WITH finished AS (
    SELECT finished_at, state FROM {jobs}
    WHERE state IN ('completed', 'failed', 'cancelled')
      AND finished_at >= %(since)s AND finished_at < %(until)s
    ORDER BY finished_at DESC
    LIMIT %(cap)s
)
SELECT date_bin(%(width)s, finished_at, %(origin)s) AS at,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) AS read
FROM finished
GROUP BY 1
ORDER BY 1
"""

# Run times of the latest completed jobs (at most `cap` finished jobs read): from the
# start of the attempt's run (`began_at`, else the claim) to its end.
RUN_TIMES = """
WITH recent AS (
    SELECT task, state, finished_at - coalesce(began_at, started_at) AS took FROM {jobs}
    WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at >= %(since)s
    ORDER BY finished_at DESC
    LIMIT %(cap)s
)
SELECT task, count(*) AS completed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM took)) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM took)) AS p95,
       (SELECT count(*) FROM recent) AS read
FROM recent
WHERE state = 'completed' AND took IS NOT NULL
GROUP BY task
ORDER BY count(*) DESC, task
LIMIT %(limit)s
"""

# How long the oldest due waiting job of each queue has waited, exactly, without reading
# the waiting jobs: a skip scan of the fetch index (queue, priority DESC, run_at), one
# probe per (queue, priority) pair, whose first entry is the pair's oldest job.
QUEUE_LATENCY = """
WITH RECURSIVE heads AS (
    (SELECT queue, priority, run_at, 1 AS visited FROM {live} WHERE state = 'available'
     ORDER BY queue, priority DESC, run_at LIMIT 1)
    UNION ALL
    SELECT following.queue, following.priority, following.run_at, h.visited + 1
    FROM heads AS h
    CROSS JOIN LATERAL (
        (SELECT queue, priority, run_at FROM {live}
         WHERE state = 'available' AND queue = h.queue AND priority < h.priority
         ORDER BY priority DESC, run_at LIMIT 1)
        UNION ALL
        (SELECT queue, priority, run_at FROM {live}
         WHERE state = 'available' AND queue > h.queue
         ORDER BY queue, priority DESC, run_at LIMIT 1)
        LIMIT 1
    ) AS following
    WHERE h.visited < %(groups)s
)
SELECT h.queue, now() - min(h.run_at) FILTER (WHERE h.run_at <= now()) AS waited,
       coalesce(q.paused, false) AS paused, max(h.visited) >= %(groups)s AS partial
FROM heads AS h
LEFT JOIN {queues} AS q ON q.name = h.queue
GROUP BY h.queue, q.paused
ORDER BY waited DESC NULLS LAST, h.queue
"""

# Per queue: waiting jobs (capped, from the fetch index: the queue leads it), how long the
# oldest due one has waited, running jobs (from the running index), finished in the last
# hour (the finished index), and the queue's settings. Queues are those with waiting or
# running jobs, those that finished a job in the last hour, and those with settings.
QUEUES = """
WITH waiting AS (
    SELECT queue, count(*) AS waiting,
           now() - min(run_at) FILTER (WHERE run_at <= now()) AS oldest_waiting
    FROM (
        SELECT queue, run_at FROM {live} WHERE state = 'available' LIMIT %(scan)s
    ) AS w
    GROUP BY queue
), running AS (
    SELECT queue, count(*) AS running FROM {live} WHERE state = 'running' GROUP BY queue
), recent AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'completed') AS completed_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour
    FROM {jobs}
    WHERE state IN ('completed', 'failed', 'cancelled')
      AND finished_at >= now() - interval '1 hour'
    GROUP BY queue
), names AS (
    SELECT queue AS name FROM waiting UNION SELECT queue FROM running
    UNION SELECT queue FROM recent UNION SELECT name FROM {queues}
)
SELECT n.name, coalesce(w.waiting, 0) AS waiting, w.oldest_waiting,
       coalesce(r.running, 0) AS running,
       coalesce(recent.completed_last_hour, 0) AS completed_last_hour,
       coalesce(recent.failed_last_hour, 0) AS failed_last_hour,
       coalesce(q.paused, false) AS paused, q.max_waiting, q.max_running
FROM names AS n
LEFT JOIN waiting AS w ON w.queue = n.name
LEFT JOIN running AS r ON r.queue = n.name
LEFT JOIN recent ON recent.queue = n.name
LEFT JOIN {queues} AS q ON q.name = n.name
ORDER BY n.name
"""
# The waiting jobs the queues page reads at most (beyond, its counts say "N+").
QUEUES_SCAN = 100_000


@dataclass(frozen=True)
class StateCount:
    """A state's count: exact below the cap, else at least the cap (`counted` None: not
    counted, a big table's state without an index); the planner's estimate beside it."""

    state: str
    counted: int | None
    estimated: int | None

    @property
    def capped(self) -> bool:
        return self.counted is not None and self.counted > COUNT_CAP


@dataclass(frozen=True)
class Bin:
    """The jobs that finished in one bin of a chart, from `at` on."""

    at: datetime
    completed: int
    failed: int


@dataclass(frozen=True)
class FinishedBins:
    """The bins a read of finished jobs counted: every bin from `counted_from` on (the
    read was cut short by its cap when that is later than the start asked for)."""

    bins: list[Bin]
    counted_from: datetime
    read: int


@dataclass(frozen=True)
class RunTime:
    """How long a task's completed jobs ran: median and 95th percentile, in seconds."""

    task: str
    completed: int
    p50: float
    p95: float


@dataclass(frozen=True)
class QueueLatency:
    """How long the oldest due waiting job of a queue has waited (None: none is due)."""

    queue: str
    waited: timedelta | None
    paused: bool


@dataclass(frozen=True)
class QueueRow:
    """One queue as the queues page shows it."""

    name: str
    waiting: int
    waiting_capped: bool
    oldest_waiting: timedelta | None
    running: int
    completed_last_hour: int
    failed_last_hour: int
    paused: bool
    max_waiting: int | None
    max_running: int | None


class DashboardStatements(StatementGroup):
    """The overview's and the queues page's reads."""

    def state_counts(self, conn: Any) -> list[StateCount]:
        params = {
            "cap": COUNT_CAP,
            "small": SMALL_TABLE,
            "history": self.sql.render("{history}").as_string(),
            "states": [state.value for state in STATES],
        }
        found = self._rows(conn, STATE_COUNTS, params)
        return [
            StateCount(state, None if counted is None else int(counted), estimated)
            for state, counted, estimated in found
        ]

    def now(self, conn: Any) -> datetime:
        """The database's clock (the transaction's start), which `finished_at` is on."""
        [(now,)] = self._rows(conn, NOW)
        return now  # type: ignore[no-any-return]

    def finished_bins(
        self,
        conn: Any,
        *,
        since: datetime,
        until: datetime,
        width: timedelta,
        origin: datetime,
        cap: int | None = CHART_SCAN,
    ) -> FinishedBins:
        """Completed and failed jobs per bin of `width` (aligned on `origin`) that finished
        in [since, until), read newest first, at most `cap` rows (None: all)."""
        params = {"since": since, "until": until, "width": width, "origin": origin, "cap": cap}
        rows = self._rows(conn, FINISHED_BINS, params)
        read = sum(int(row[3]) for row in rows)
        counted_from = since
        if cap is not None and read >= cap:
            counted_from = rows[0][0] + width  # the oldest bin read is partial
        bins = [
            Bin(at, int(done), int(failed)) for at, done, failed, _ in rows if at >= counted_from
        ]
        return FinishedBins(bins, counted_from, read)

    def run_times(
        self, conn: Any, *, since: datetime, limit: int = 20
    ) -> tuple[list[RunTime], bool]:
        """Run times of the busiest tasks among the last `RUN_TIMES_SCAN` jobs finished
        since `since`; True when that cap was reached (older jobs were not read)."""
        params = {"since": since, "limit": limit, "cap": RUN_TIMES_SCAN}
        rows = self._rows(conn, RUN_TIMES, params)
        times = [RunTime(task, int(n), float(p50), float(p95)) for task, n, p50, p95, _ in rows]
        return times, bool(rows) and rows[0][4] >= RUN_TIMES_SCAN

    def queue_latency(self, conn: Any) -> tuple[list[QueueLatency], bool]:
        """Every queue with waiting jobs, longest wait first; True when there were more
        (queue, priority) pairs than `LATENCY_GROUPS` (later queues are missing)."""
        rows = self._rows(conn, QUEUE_LATENCY, {"groups": LATENCY_GROUPS})
        latencies = [QueueLatency(queue, waited, paused) for queue, waited, paused, _ in rows]
        return latencies, any(partial for *_, partial in rows)

    def queues(self, conn: Any) -> list[QueueRow]:
        rows = self._rows(conn, QUEUES, {"scan": QUEUES_SCAN}, named=True).dicts()
        capped = sum(row["waiting"] for row in rows) >= QUEUES_SCAN
        return [QueueRow(waiting_capped=capped, **row) for row in rows]
