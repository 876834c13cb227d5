"""The web dashboard's reads for the failing, workers, schedules and health pages, each
bounded so that a page costs about the same with a million jobs as with a hundred.

Failures come from the `errors` entries of the jobs in `jobs_errors_idx` (the jobs that
failed an attempt, by `finished_at`), read newest first up to a cap. A job's errors all
happened before it finished, so when the read stops at a job that finished at T, every
entry after T was seen: the windows that start after T are exact, the older ones are
lower bounds, and the page says so. Running jobs are read through the running index,
up to a cap, and the workers' table is small by nature (lost rows go after an hour).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgjobs.data.group import StatementGroup
from pgjobs.data.schedules import ScheduleState
from pgjobs.types import WorkerRegistration

# The jobs with errors the failing page reads at most, and of them at most how many are
# unfinished (waiting for a retry: their entries may be of any age, so they come first).
FAILING_SCAN = 6_000
FAILING_UNFINISHED_SCAN = 1_500
# The groups (task, error class) the failing page lists at most.
FAILING_GROUPS = 200
# The running jobs the workers page and the health checks read at most.
RUNNING_SCAN = 20_000
# The workers the workers page lists at most (a fleet has tens; lost rows go in an hour).
WORKERS_LIMIT = 500

# Each failed attempt is an entry of `errors`: the last entry of a `failed` job failed it
# for good, every other one was retried. Entries of attempt 0 are not attempts (a
# workflow step cancelled because a step it depends on broke). The error class is the
# message's first line up to the first colon ("ValueError", "worker lost"). Only short
# values leave the scan: the tracebacks stay in the rows read.
FAILING = """
WITH entries AS MATERIALIZED (
    SELECT r.task, r.unfinished, r.finished_at, e.position,
           left(split_part(e.entry ->> 'error', E'\\n', 1), 300) AS message,
           (e.entry ->> 'at')::timestamptz AS at,
           coalesce((e.entry ->> 'attempt')::int, 1) > 0 AS attempted,
           r.state = 'failed' AND e.position = jsonb_array_length(r.errors) AS final
    FROM (
        (SELECT task, state, errors, finished_at, true AS unfinished FROM {live}
         WHERE errors <> '[]'::jsonb AND finished_at IS NULL
         ORDER BY finished_at DESC
         LIMIT %(unfinished_cap)s)
        UNION ALL
        (SELECT task, state, errors, finished_at, false FROM {jobs}
         WHERE errors <> '[]'::jsonb AND finished_at > now() - %(week)s
         ORDER BY finished_at DESC
         LIMIT %(cap)s)
        LIMIT %(cap)s
    ) AS r
    CROSS JOIN LATERAL jsonb_array_elements(r.errors) WITH ORDINALITY AS e(entry, position)
), coverage AS (
    SELECT count(*) FILTER (WHERE position = 1) AS jobs_read,
           count(*) FILTER (WHERE position = 1 AND unfinished) AS unfinished_read,
           min(finished_at) AS oldest_read
    FROM entries
), groups AS (
    SELECT task, left(split_part(message, ':', 1), 120) AS error_class,
           count(*) FILTER (WHERE at > now() - %(hour)s) AS last_hour,
           count(*) FILTER (WHERE at > now() - %(day)s) AS last_day,
           count(*) AS last_week,
           count(*) FILTER (WHERE final AND at > now() - %(hour)s) AS final_last_hour,
           count(*) FILTER (WHERE final AND at > now() - %(day)s) AS final_last_day,
           count(*) FILTER (WHERE final) AS final_last_week,
           max(at) AS last_at,
           (array_agg(message ORDER BY at DESC))[1] AS example
    FROM entries
    WHERE attempted AND at > now() - %(week)s
    GROUP BY 1, 2
    ORDER BY last_day DESC, last_week DESC, last_at DESC, task, error_class
    LIMIT %(groups)s + 1
)
SELECT c.jobs_read, c.unfinished_read, c.oldest_read, now() AS read_at, g.*
FROM coverage AS c
LEFT JOIN groups AS g ON true
ORDER BY g.last_day DESC, g.last_week DESC, g.last_at DESC, g.task, g.error_class
"""

# Live workers first (oldest first), then the lost ones, with what each leads as the
# registry elects it (worker/registry.py, REGISTER_WORKER): the fleet's upkeep goes to
# the longest-running live worker, each duty to the longest-running live worker that has
# it. The jobs each holds come from a bounded read of the running jobs.
WORKERS = """
WITH fleet AS (
    SELECT w.*, w.last_heartbeat_at <= now() - make_interval(secs => w.rescue_after) AS lost
    FROM {workers} AS w
), ranked AS (
    SELECT id, row_number() OVER (ORDER BY started_at, id) AS rank FROM fleet WHERE NOT lost
), duty_leaders AS (
    SELECT DISTINCT ON (d.duty) d.duty, f.id
    FROM fleet AS f CROSS JOIN LATERAL unnest(f.duties) AS d(duty)
    WHERE NOT f.lost
    ORDER BY d.duty, f.started_at, f.id
), held AS (
    SELECT worker_id, task, count(*) AS n
    FROM (SELECT worker_id, task FROM {live} WHERE state = 'running' LIMIT %(scan)s) AS r
    GROUP BY worker_id, task
), holding AS (
    SELECT worker_id, jsonb_object_agg(task, n) AS tasks, sum(n)::bigint AS jobs
    FROM held GROUP BY worker_id
)
SELECT f.id, f.host, f.pid, f.queues, f.concurrency, f.version, f.rescue_after, f.duties,
       f.started_at, f.last_heartbeat_at, now() - f.last_heartbeat_at AS silent_for, f.lost,
       ARRAY(SELECT 'maintenance' FROM ranked WHERE ranked.id = f.id AND ranked.rank = 1
             UNION ALL
             SELECT duty FROM duty_leaders WHERE duty_leaders.id = f.id) AS leads,
       coalesce(h.tasks, '{{}}'::jsonb) AS tasks, coalesce(h.jobs, 0) AS holding,
       (SELECT count(*) FROM fleet) AS fleet_size,
       coalesce((SELECT sum(n) FROM held), 0) >= %(scan)s AS running_capped
FROM fleet AS f
LEFT JOIN holding AS h ON h.worker_id = f.id
ORDER BY f.lost, f.started_at, f.id
LIMIT %(limit)s
"""

# The schedules' rows and the state of each one's last job (by primary key).
SCHEDULES = """
SELECT s.name, s.expression, s.timezone, s.done_until, s.last_tick, s.last_job_id,
       s.updated_at, j.state AS last_job_state, j.finished_at AS last_job_finished_at
FROM {schedules} AS s
LEFT JOIN {jobs} AS j ON j.id = s.last_job_id
ORDER BY s.name
LIMIT %(limit)s
"""

# What the job a "run now" copies: a schedule's row and its last job, when it still is.
SCHEDULE_TEMPLATE = """
SELECT s.name, j.task, j.payload, j.queue, j.priority, j.max_attempts
FROM {schedules} AS s
LEFT JOIN {jobs} AS j ON j.id = s.last_job_id
WHERE s.name = %(name)s
"""

FLEET = """
SELECT count(*) FILTER (WHERE last_heartbeat_at > now() - make_interval(secs => rescue_after))
           AS live,
       count(*) FILTER (WHERE last_heartbeat_at <= now() - make_interval(secs => rescue_after))
           AS lost
FROM {workers}
"""

PAUSED_QUEUES = "SELECT name FROM {queues} WHERE paused ORDER BY name LIMIT 100"


@dataclass(frozen=True)
class FailureGroup:
    """Failed attempts of one task with one error class: counts per window (all failed
    attempts, and those that failed their job for good), the last one and its message."""

    task: str
    error_class: str
    last_hour: int
    last_day: int
    last_week: int
    final_last_hour: int
    final_last_day: int
    final_last_week: int
    last_at: datetime
    example: str


@dataclass(frozen=True)
class Failures:
    """The failing page's groups and how much of the week they cover.

    `complete_since`: every failed attempt after this moment was counted (None: the
    whole week was); windows starting earlier show lower bounds.
    """

    groups: list[FailureGroup]
    more_groups: bool
    jobs_read: int
    complete_since: datetime | None
    read_at: datetime


@dataclass(frozen=True)
class WorkerRow(WorkerRegistration):
    """A row of `<schema>.workers` with what it leads and the jobs it holds."""

    started_at: datetime
    last_heartbeat_at: datetime
    silent_for: timedelta
    lost: bool
    leads: list[str]
    tasks: dict[str, int]
    holding: int


@dataclass(frozen=True)
class Fleet:
    """The workers page: up to `WORKERS_LIMIT` workers, how many there are, and whether
    the jobs held were counted from only part of the running jobs."""

    workers: list[WorkerRow]
    size: int
    running_capped: bool


@dataclass(frozen=True)
class StoredSchedule(ScheduleState):
    """A row of `<schema>.schedules` and the state of its last job."""

    last_job_state: str | None
    last_job_finished_at: datetime | None


@dataclass(frozen=True)
class ScheduleTemplate:
    """A schedule's row and its last job's task and options (None: pruned or never)."""

    name: str
    task: str | None
    payload: dict[str, Any] | None
    queue: str | None
    priority: int | None
    max_attempts: int | None


class DashboardOpsStatements(StatementGroup):
    """The reads of the failing, workers, schedules and health pages."""

    def failures(self, conn: Any) -> Failures:
        params = {
            "cap": FAILING_SCAN,
            "unfinished_cap": FAILING_UNFINISHED_SCAN,
            "groups": FAILING_GROUPS,
            "hour": timedelta(hours=1),
            "day": timedelta(days=1),
            "week": timedelta(days=7),
        }
        rows = self._rows(conn, FAILING, params, named=True).dicts()
        first = rows[0]
        groups = [
            FailureGroup(**{k: row[k] for k in FailureGroup.__dataclass_fields__})
            for row in rows
            if row["task"] is not None
        ]
        capped = first["jobs_read"] >= FAILING_SCAN
        unfinished_capped = first["unfinished_read"] >= FAILING_UNFINISHED_SCAN
        complete_since = None
        if unfinished_capped:
            complete_since = first["read_at"]  # any entry may be missing: no window exact
        elif capped:
            complete_since = first["oldest_read"]
        return Failures(
            groups=groups[:FAILING_GROUPS],
            more_groups=len(groups) > FAILING_GROUPS,
            jobs_read=int(first["jobs_read"]),
            complete_since=complete_since,
            read_at=first["read_at"],
        )

    def fleet(self, conn: Any) -> Fleet:
        params = {"scan": RUNNING_SCAN, "limit": WORKERS_LIMIT}
        rows = self._rows(conn, WORKERS, params, named=True).dicts()
        workers = [WorkerRow(**{k: row[k] for k in WorkerRow.__dataclass_fields__}) for row in rows]
        size = int(rows[0]["fleet_size"]) if rows else 0
        capped = bool(rows[0]["running_capped"]) if rows else False
        return Fleet(workers, size, capped)

    def stored_schedules(self, conn: Any, *, limit: int = 1000) -> list[StoredSchedule]:
        rows = self._rows(conn, SCHEDULES, {"limit": limit}, named=True).dicts()
        return [StoredSchedule(**row) for row in rows]

    def schedule_template(self, conn: Any, name: str) -> ScheduleTemplate | None:
        """The schedule `name`'s row and its last job, or None when there is no row."""
        found = self._rows(conn, SCHEDULE_TEMPLATE, {"name": name}, named=True).dicts()
        return ScheduleTemplate(**found[0]) if found else None

    def fleet_counts(self, conn: Any) -> tuple[int, int]:
        """(live workers, lost workers)."""
        [(live, lost)] = self._rows(conn, FLEET)
        return int(live), int(lost)

    def paused_queues(self, conn: Any) -> list[str]:
        return [name for (name,) in self._rows(conn, PAUSED_QUEUES)]
