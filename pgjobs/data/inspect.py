"""Reading the queue: statistics, jobs, queues, limits, workers and the schema's revision.

Every read returns typed values; none changes anything, so each runs in whatever
transaction the caller has (the CLI's, a test's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgjobs.data.group import StatementGroup
from pgjobs.data.sql import fill
from pgjobs.types import STATES, Job, JobState, RegisteredWorker


@dataclass(frozen=True)
class QueueStats:
    """One queue's jobs by state, its oldest overdue waiting job and its recent throughput.

    `oldest_waiting` is how long the longest-waiting available job has been runnable
    (None when nothing is waiting); the `finished_*` counts are jobs a worker completed or
    failed in the last one and five minutes.
    """

    queue: str
    counts: dict[JobState, int]
    oldest_waiting: timedelta | None
    finished_last_minute: int
    finished_last_5_minutes: int

    @property
    def total(self) -> int:
        """Jobs of this queue in any state."""
        return sum(self.counts.values())

    @classmethod
    def from_row(cls, row: Mapping[str, Any], queue: str) -> QueueStats:
        """From a row of QUEUE_STATS; its NULLs (a queue with settings and no jobs) are 0."""
        return cls(
            queue=queue,
            counts={state: row[state.value] or 0 for state in STATES},
            oldest_waiting=row["oldest_waiting"],
            finished_last_minute=row["finished_last_minute"] or 0,
            finished_last_5_minutes=row["finished_last_5_minutes"] or 0,
        )


@dataclass(frozen=True)
class QueueOverview:
    """A queue's statistics and its settings: paused, and its limits of waiting jobs (at
    enqueue) and of running jobs (at claim)."""

    stats: QueueStats
    paused: bool
    max_waiting: int | None
    max_running: int | None = None


@dataclass(frozen=True)
class BucketUse:
    """One bucket of a limit in use: its name (`c:email.send:42`), its key's value (None
    for a limit without key) and its use (running jobs, or starts in the window)."""

    bucket: str
    key: str | None
    used: int


@dataclass(frozen=True)
class LimitUse:
    """The use of one limit of a task: its most used buckets (most first, at most the
    `top` asked for), how many buckets are in use and their total use."""

    top: tuple[BucketUse, ...] = ()
    buckets: int = 0
    total: int = 0


@dataclass(frozen=True)
class TaskLimit:
    """A row of `task_limits` and the use of its limits: `running` (None without a
    concurrency limit) and `starts` in the current window (None without a rate limit)."""

    task: str
    concurrency: int | None
    concurrency_key: str | None
    rate_count: int | None
    rate_period: float | None
    rate_key: str | None
    updated_at: datetime
    running: LimitUse | None
    starts: LimitUse | None


@dataclass(frozen=True)
class QueueRunningLimit:
    """A queue's `max_running`, and the running jobs that count against it."""

    queue: str
    max_running: int
    running: int
    updated_at: datetime


# Counts by queue and state, the oldest overdue waiting job and recent throughput, in one
# pass over the table. Throughput counts jobs a worker finished (completed or failed);
# cancellations are a user's doing, not work done.
QUEUE_STATS = """
SELECT queue,
       count(*) FILTER (WHERE state = 'available') AS available,
       count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE state = 'blocked') AS blocked,
       now() - min(run_at) FILTER (WHERE state = 'available' AND run_at <= now())
           AS oldest_waiting,
       count(*) FILTER (WHERE state IN ('completed', 'failed')
                          AND finished_at > now() - interval '1 minute')
           AS finished_last_minute,
       count(*) FILTER (WHERE state IN ('completed', 'failed')
                          AND finished_at > now() - interval '5 minutes')
           AS finished_last_5_minutes
FROM {jobs}
GROUP BY queue
ORDER BY queue
"""

# Every column of a job, in the order of `pgjobs.types.Job`'s fields.
JOB_COLUMNS = """
id, queue, task, payload, state, priority, attempts, max_attempts, run_at, created_at,
started_at, finished_at, heartbeat_at, worker_id, unique_key, errors, scheduled_at,
began_at, result, workflow_id, step, depends_on, run_if, meta
"""

# A NULL filter means "any"; newest first by id, which the primary key serves backwards.
LIST_JOBS = """
SELECT {job_columns}
FROM {jobs}
WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
  AND (%(workflow_id)s::bigint IS NULL OR workflow_id = %(workflow_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s
"""

GET_JOB = """
SELECT {job_columns}
FROM {jobs}
WHERE id = %(id)s
"""

# Whether `pgjobs migrate` created the jobs table, and whether this role may read the
# schema's Alembic revision (least-privilege roles may not): a statement that cannot
# fail, so a caller's transaction survives it (pgjobs.schema_revision).
SCHEMA_STATE = """
SELECT to_regclass(%(jobs_table)s) IS NOT NULL,
       coalesce(has_table_privilege(to_regclass(%(version_table)s), 'SELECT'), false)
"""
SCHEMA_REVISION = "SELECT version_num FROM {alembic_version}"

# `pgjobs queues`: the statistics of QUEUE_STATS beside each queue's settings; a queue
# with settings and no jobs, or jobs and no settings, has a row too.
QUEUE_OVERVIEW = """
SELECT coalesce(s.queue, q.name) AS name, s.*, coalesce(q.paused, false) AS paused,
       q.max_waiting, q.max_running
FROM ({queue_stats}) AS s
FULL JOIN {queues} AS q ON q.name = s.queue
ORDER BY 1
"""

# Every registered worker with the jobs it holds (running, or claimed and waiting for a
# thread: both are `running` in the table), from the partial running index.
LIST_WORKERS = """
WITH held AS (
    SELECT worker_id, id, task FROM {live} WHERE state = 'running'
), tasks AS (
    SELECT worker_id, jsonb_object_agg(task, n) AS tasks
    FROM (SELECT worker_id, task, count(*) AS n FROM held GROUP BY worker_id, task) AS t
    GROUP BY worker_id
), ids AS (
    SELECT worker_id, array_agg(id ORDER BY id) AS job_ids FROM held GROUP BY worker_id
)
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, w.version, w.rescue_after, w.duties,
       w.started_at, w.last_heartbeat_at,
       w.last_heartbeat_at <= now() - make_interval(secs => w.rescue_after) AS lost,
       coalesce(tasks.tasks, '{{}}'::jsonb) AS tasks,
       coalesce(ids.job_ids, '{{}}'::bigint[]) AS job_ids
FROM {workers} AS w
LEFT JOIN tasks ON tasks.worker_id = w.id
LEFT JOIN ids ON ids.worker_id = w.id
ORDER BY lost, w.started_at, w.id
"""

# `pgjobs limits` (migration 0010). A bucket is `<kind>:<task>` for a limit without key,
# `<kind>:<task>:<key value>` for one with a key: a task's bucket `b` of the limit whose
# key column is `key`, and the key's value in it.
LIMITED_TASKS = """
SELECT task, concurrency, concurrency_key, rate_count, rate_period, rate_key, updated_at
FROM {task_limits}
ORDER BY task
"""
BUCKET_OF_TASK = """CASE WHEN t.{key} IS NULL THEN b.bucket = '{kind}:' || t.task
     ELSE left(b.bucket, length(t.task) + 3) = '{kind}:' || t.task || ':' END"""
KEY_VALUE = "CASE WHEN t.{key} IS NOT NULL THEN substr(b.bucket, length(t.task) + 4) END"
# The most used buckets of each task (`owned`: task, bucket, key, used), at most `top`.
TOP_BUCKETS = """
SELECT task, bucket, key, used, buckets, total
FROM (SELECT *, row_number() OVER (PARTITION BY task ORDER BY used DESC, bucket) AS rank,
             count(*) OVER (PARTITION BY task) AS buckets,
             sum(used) OVER (PARTITION BY task) AS total
      FROM owned) AS ranked
WHERE rank <= %(top)s
ORDER BY task, rank
"""
# Concurrency: the buckets held by running jobs, read from the running jobs alone (the
# partial indexes), never the whole table: a fleet runs few jobs at once.
CONCURRENCY_USE = """
WITH held AS (
    SELECT b.bucket, count(*) AS used
    FROM {live} AS j CROSS JOIN LATERAL unnest(j.limit_buckets) AS b(bucket)
    WHERE j.state = 'running' AND j.limit_buckets IS NOT NULL
    GROUP BY b.bucket
), owned AS (
    SELECT t.task, b.bucket, {key_value} AS key, b.used
    FROM {task_limits} AS t JOIN held AS b ON {bucket_of_task}
    WHERE t.concurrency IS NOT NULL
)
{top_buckets}
"""
# Rates: the starts still in their window (`until` is a start's time plus its limit's
# period), read through the `until` index; those that left it are deleted by claims.
RATE_USE = """
WITH recent AS (
    SELECT bucket, count(*) AS used FROM {rate_starts} WHERE until > now() GROUP BY bucket
), owned AS (
    SELECT t.task, b.bucket, {key_value} AS key, b.used
    FROM {task_limits} AS t JOIN recent AS b ON {bucket_of_task}
    WHERE t.rate_count IS NOT NULL
)
{top_buckets}
"""
# Queues' max_running, each with the running jobs holding its bucket (the GIN index).
QUEUE_RUNNING_LIMITS = """
SELECT q.name, q.max_running,
       (SELECT count(*) FROM {jobs} AS j
        WHERE j.state = 'running' AND j.limit_buckets IS NOT NULL
          AND j.limit_buckets @> ARRAY['q:' || q.name]) AS running,
       q.updated_at
FROM {queues} AS q
WHERE q.max_running IS NOT NULL
ORDER BY q.name
"""


LIST_JOBS = fill(LIST_JOBS, job_columns=JOB_COLUMNS.strip())
GET_JOB = fill(GET_JOB, job_columns=JOB_COLUMNS.strip())
QUEUE_OVERVIEW = fill(QUEUE_OVERVIEW, queue_stats=QUEUE_STATS)
CONCURRENCY_USE, RATE_USE = (
    fill(
        template,
        top_buckets=TOP_BUCKETS.strip(),
        bucket_of_task=fill(BUCKET_OF_TASK, kind=kind, key=key),
        key_value=fill(KEY_VALUE, key=key),
    )
    for template, kind, key in (
        (CONCURRENCY_USE, "c", "concurrency_key"),
        (RATE_USE, "r", "rate_key"),
    )
)
_JOB_FIELDS = [field.name for field in dataclasses.fields(Job)]  # JOB_COLUMNS' order


class InspectStatements(StatementGroup):
    """The reads of one schema, on a given connection."""

    def schema_revision(self, conn: Any) -> tuple[bool, str | None]:
        """(whether `pgjobs migrate` created this schema's jobs table, its Alembic
        revision); the revision is None when this role may not read it."""
        params = {
            "jobs_table": self.sql.jobs.as_string(),
            "version_table": self.sql.version_table.as_string(),
        }
        [(migrated, readable)] = self._rows(conn, SCHEMA_STATE, params)
        if not (migrated and readable):
            return bool(migrated), None
        found = self._rows(conn, SCHEMA_REVISION)
        return True, (found[0][0] if found else None)

    def queue_stats(self, conn: Any) -> list[QueueStats]:
        """Statistics of every queue that has jobs, by queue name, in one pass."""
        found = self._rows(conn, QUEUE_STATS, named=True).dicts()
        return [QueueStats.from_row(row, row["queue"]) for row in found]

    def queue_overview(self, conn: Any) -> list[QueueOverview]:
        """Every queue that has jobs or settings, by name, with both."""
        return [
            QueueOverview(
                QueueStats.from_row(row, row["name"]),
                row["paused"],
                row["max_waiting"],
                row["max_running"],
            )
            for row in self._rows(conn, QUEUE_OVERVIEW, named=True).dicts()
        ]

    def task_limits(self, conn: Any, *, top: int) -> list[TaskLimit]:
        """Every task's limits, by task, with the use of each: at most `top` buckets."""
        running, starts = (
            self._limit_use(conn, template, top) for template in (CONCURRENCY_USE, RATE_USE)
        )
        return [
            TaskLimit(
                **row,
                running=running.get(row["task"], LimitUse()) if row["concurrency"] else None,
                starts=starts.get(row["task"], LimitUse()) if row["rate_count"] else None,
            )
            for row in self._rows(conn, LIMITED_TASKS, named=True).dicts()
        ]

    def _limit_use(self, conn: Any, template: str, top: int) -> dict[str, LimitUse]:
        found: dict[str, list[Any]] = {}
        for task, bucket, key, used, buckets, total in self._rows(conn, template, {"top": top}):
            found.setdefault(task, []).append((BucketUse(bucket, key, used), buckets, total))
        return {
            task: LimitUse(tuple(use for use, _, _ in rows), rows[0][1], int(rows[0][2]))
            for task, rows in found.items()
        }

    def queue_running_limits(self, conn: Any) -> list[QueueRunningLimit]:
        """Every queue's max_running, by name, with the running jobs counted against it."""
        return [QueueRunningLimit(*row) for row in self._rows(conn, QUEUE_RUNNING_LIMITS)]

    def list_jobs(
        self,
        conn: Any,
        *,
        states: Sequence[str] | None,
        queues: Sequence[str] | None,
        tasks: Sequence[str] | None,
        limit: int,
        workflow_id: int | None = None,
    ) -> list[Job]:
        """The newest `limit` jobs matching every filter given (None matches all), in
        the caller's transaction (a test sees the jobs it has not committed)."""
        params = {
            "states": states,
            "queues": queues,
            "tasks": tasks,
            "limit": limit,
            "workflow_id": workflow_id,
        }
        return [_job(row) for row in self._rows(conn, LIST_JOBS, params)]

    def get_job(self, conn: Any, job_id: int) -> Job | None:
        """One job, or None."""
        found = self._rows(conn, GET_JOB, {"id": job_id})
        return _job(found[0]) if found else None

    def list_workers(self, conn: Any) -> list[RegisteredWorker]:
        """Every registered worker with the jobs it holds: live ones first, oldest first."""
        found = self._rows(conn, LIST_WORKERS, named=True).dicts()
        return [RegisteredWorker.from_row(row) for row in found]


def _job(row: Sequence[Any]) -> Job:
    return Job.from_row(dict(zip(_JOB_FIELDS, row, strict=True)))
