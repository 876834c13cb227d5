"""Reading the queue: statistics, jobs, queues, workers and the schema's revision.

Every read returns typed values; none changes anything, so each runs in whatever
transaction the caller has (the CLI's, a test's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
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
    """A queue's statistics and its settings: paused, and its waiting-jobs limit."""

    stats: QueueStats
    paused: bool
    max_waiting: int | None


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
began_at, result, workflow_id, step, depends_on, run_if
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
       q.max_waiting
FROM ({queue_stats}) AS s
FULL JOIN {queues} AS q ON q.name = s.queue
ORDER BY 1
"""

# Every registered worker with the jobs it holds (running, or claimed and waiting for a
# thread: both are `running` in the table), from the partial running index.
LIST_WORKERS = """
WITH held AS (
    SELECT worker_id, id, task FROM {jobs} WHERE state = 'running'
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


LIST_JOBS = fill(LIST_JOBS, job_columns=JOB_COLUMNS.strip())
GET_JOB = fill(GET_JOB, job_columns=JOB_COLUMNS.strip())
QUEUE_OVERVIEW = fill(QUEUE_OVERVIEW, queue_stats=QUEUE_STATS)
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
            QueueOverview(QueueStats.from_row(row, row["name"]), row["paused"], row["max_waiting"])
            for row in self._rows(conn, QUEUE_OVERVIEW, named=True).dicts()
        ]

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
