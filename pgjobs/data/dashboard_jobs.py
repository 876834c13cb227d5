"""The web dashboard's jobs and workflows pages: the jobs list's search, the jobs a bulk
action applies to, deleting finished jobs, a job's place in its workflow, and the
workflows.

Each read costs about the same with a million jobs as with a hundred. The list goes by
id, newest first (keyset, never OFFSET), and a page looks at no more than a window of
ids next to its cursor, `SCAN_WINDOW` of them, `TEXT_WINDOW` with a text search (which
reads each job's arguments as text). When fewer than a page of them match, the page
says which ids it looked at and its next link continues past them, so a filter that
matches few jobs (a rare task, an old time range) costs one window per page instead of
a scan of the table. Measured with 1,000,000 jobs, a whole window costs 20-60 ms
(200,000 ids, filters) or 40-90 ms (50,000 ids, a text search). Counts of a workflow's
steps stop at a cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgjobs.data.connector import run
from pgjobs.data.group import StatementGroup
from pgjobs.data.maintenance import DELETE_EMPTY_WORKFLOWS
from pgjobs.data.sql import fill
from pgjobs.data.workflows import steps_by_id
from pgjobs.errors import JobNotFoundError, JobStateError

SCAN_WINDOW = 200_000  # ids a page of the jobs list looks at, at most
TEXT_WINDOW = 50_000  # the same with a text search
BIGINT_MAX = 2**63 - 1
# A workflow's steps counted at most, per workflow of the list and on its own page.
STEP_COUNT_CAP = 1_000
WORKFLOW_COUNT_CAP = 100_000

# The jobs list's filters; NULL: any. A text search looks in the last error, and in the
# arguments unless `in_args` is false (a dashboard that redacts arguments must not let
# a search find what it hides).
MATCHES = """
id BETWEEN %(low)s AND %(high)s
AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
AND (%(queue)s::text IS NULL OR queue = %(queue)s)
AND (%(task)s::text IS NULL OR task = %(task)s)
AND (%(created_since)s::timestamptz IS NULL OR created_at >= %(created_since)s)
AND (%(created_until)s::timestamptz IS NULL OR created_at <= %(created_until)s)
AND (%(finished_since)s::timestamptz IS NULL OR finished_at >= %(finished_since)s)
AND (%(finished_until)s::timestamptz IS NULL OR finished_at <= %(finished_until)s)
AND (%(pattern)s::text IS NULL
     OR (%(in_args)s AND payload::text ILIKE %(pattern)s)
     OR (errors -> -1 ->> 'error') ILIKE %(pattern)s)
"""
LIST_JOBS = """
SELECT id, task, queue, state, attempts, max_attempts, created_at, finished_at, payload,
       left(errors -> -1 ->> 'error', 500) AS last_error, workflow_id, step
FROM {jobs}
WHERE {matches}
ORDER BY id {order}
LIMIT %(limit)s
"""
LIST_OLDER = fill(LIST_JOBS, matches=MATCHES.strip(), order="DESC")
LIST_NEWER = fill(LIST_JOBS, matches=MATCHES.strip(), order="ASC")
# "All matching the filter": ids and states only, newest first.
MATCHING_IDS = fill(
    "SELECT id, state FROM {jobs} WHERE {matches} ORDER BY id DESC LIMIT %(limit)s",
    matches=MATCHES.strip(),
)
# Where a window starts: the newest job at or below `high`, the oldest at or above `low`,
# and the ends of the table; four ends of the primary key, no scan.
EDGES = """
SELECT (SELECT max(id) FROM {jobs} WHERE id <= %(high)s),
       (SELECT min(id) FROM {jobs} WHERE id >= %(low)s),
       (SELECT min(id) FROM {jobs}),
       (SELECT max(id) FROM {jobs})
"""

# What a bulk action would touch: each job's state and workflow.
STATES_OF = """
SELECT id, state, workflow_id, step FROM {jobs} WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id
"""
# The workflows among `ids` with an unfinished step: one lookup each by the partial
# jobs_workflow_step_idx, stopping at the first such step.
UNFINISHED_WORKFLOWS = """
SELECT w.id FROM unnest(%(ids)s::bigint[]) AS w(id)
WHERE EXISTS (SELECT FROM {live} AS s
              WHERE s.workflow_id = w.id AND s.state IN ('available', 'running', 'blocked'))
"""
# Deleting by hand, all or nothing like retry and cancel: rows locked in id order first,
# in each table (live rows first; a finished row may still be in jobs_live).
LOCK_FOR_DELETE = """
SELECT * FROM (
    SELECT id, state, workflow_id, step FROM {live}
    WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE
) AS live
UNION ALL
SELECT * FROM (
    SELECT id, state, workflow_id, step FROM {history}
    WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE
) AS finished
"""
DELETE_FINISHED = """
WITH live AS (
    DELETE FROM {live}
    WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('completed', 'failed', 'cancelled')
    RETURNING id, workflow_id
), finished AS (
    DELETE FROM {history} WHERE id = ANY(%(ids)s::bigint[])
    RETURNING id, workflow_id
)
SELECT * FROM live UNION ALL SELECT * FROM finished
"""

# A step's dependents: the steps of its workflow that list it in `depends_on` (the
# `dependents` column lists only those still waiting when it was written).
DEPENDENTS = """
SELECT id, step, state FROM {jobs}
WHERE workflow_id = %(workflow_id)s AND depends_on @> ARRAY[%(id)s::bigint]
ORDER BY id
LIMIT %(limit)s
"""
WORKFLOW = "SELECT id, name, created_at FROM {workflows} WHERE id = %(id)s"
# A workflow's steps by state, counting at most `cap` of its steps.
STEP_COUNTS = """
SELECT coalesce(jsonb_object_agg(state, n), '{{}}'::jsonb) AS counts,
       coalesce(sum(n), 0)::bigint AS total
FROM (SELECT state, count(*) AS n
      FROM (SELECT state FROM {jobs} WHERE workflow_id = {workflow} LIMIT %(cap)s) AS s
      GROUP BY state) AS c
"""
# Workflows newest first by id, 50 a page, each with its steps counted.
LIST_WORKFLOWS = """
SELECT w.id, w.name, w.created_at, c.counts, c.total
FROM (SELECT id, name, created_at FROM {workflows}
      WHERE id BETWEEN %(low)s AND %(high)s
      ORDER BY id {order} LIMIT %(limit)s) AS w
CROSS JOIN LATERAL ({step_counts}) AS c
ORDER BY w.id {order}
"""
_COUNTS = fill(STEP_COUNTS, workflow="w.id").strip()
WORKFLOWS_OLDER = fill(LIST_WORKFLOWS, step_counts=_COUNTS, order="DESC")
WORKFLOWS_NEWER = fill(LIST_WORKFLOWS, step_counts=_COUNTS, order="ASC")
WORKFLOW_COUNTS = fill(STEP_COUNTS, workflow="%(id)s")
# A workflow's first steps in the order they were added (a step's dependencies were
# added before it, so this order is a dependency order too).
WORKFLOW_STEPS = """
SELECT id, step, task, queue, state, run_if, depends_on, attempts, max_attempts,
       created_at, started_at, finished_at, left(errors -> -1 ->> 'error', 300) AS last_error
FROM {jobs}
WHERE workflow_id = %(id)s
ORDER BY id
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class JobSearch:
    """The jobs list's filters (None: any). `pattern` is an ILIKE pattern."""

    states: Sequence[str] | None = None
    queue: str | None = None
    task: str | None = None
    pattern: str | None = None
    in_args: bool = True
    created_since: datetime | None = None
    created_until: datetime | None = None
    finished_since: datetime | None = None
    finished_until: datetime | None = None

    @property
    def window(self) -> int:
        """How many ids one page looks at."""
        return TEXT_WINDOW if self.pattern is not None else SCAN_WINDOW

    def params(self, low: int, high: int, limit: int) -> dict[str, Any]:
        return {
            "states": list(self.states) if self.states else None,
            "queue": self.queue,
            "task": self.task,
            "pattern": self.pattern,
            "in_args": self.in_args,
            "created_since": self.created_since,
            "created_until": self.created_until,
            "finished_since": self.finished_since,
            "finished_until": self.finished_until,
            "low": max(low, 0),
            "high": min(high, BIGINT_MAX),
            "limit": limit,
        }


@dataclass(frozen=True)
class JobPage:
    """One page of the list, newest first. `older` and `newer` are the cursors of the
    next pages (`before` and `after`), None at an end. `searched` is (lowest, highest)
    id the page looked at when it looked at a whole window without filling the page."""

    rows: list[dict[str, Any]]
    older: int | None
    newer: int | None
    searched: tuple[int, int] | None
    window: int


@dataclass(frozen=True)
class Matching:
    """The jobs a bulk action on "all matching" takes: (id, state), newest first;
    `capped` when more matched; `searched` the ids looked at; `complete` when those
    were every job of the table."""

    jobs: list[tuple[int, str]]
    capped: bool
    searched: tuple[int, int]
    complete: bool


@dataclass(frozen=True)
class Related:
    """A workflow step's workflow (id, name) and its dependencies and dependents as
    (id, step, state); a dependency retention deleted has step and state None."""

    workflow: tuple[int, str] | None = None
    dependencies: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    dependents: list[tuple[int, str, str]] = field(default_factory=list)


class DashboardJobs(StatementGroup):
    """The jobs and workflows pages' statements."""

    def older(self, conn: Any, search: JobSearch, before: int | None, size: int) -> JobPage:
        """The page of jobs below `before` (None: the newest)."""
        high = BIGINT_MAX if before is None else before - 1
        top, _, lowest, _ = self._edges(conn, low=0, high=high)
        if top is None:
            return JobPage([], None, None if before is None else high, None, search.window)
        floor = top - search.window + 1
        found = self._rows(conn, LIST_OLDER, search.params(floor, top, size + 1), named=True)
        rows = found.dicts()[:size]
        newer = None if before is None else (rows[0]["id"] if rows else high)
        if len(found) > size:
            return JobPage(rows, rows[-1]["id"], newer, None, search.window)
        older = floor if lowest < floor else None
        return JobPage(rows, older, newer, (max(floor, lowest), top), search.window)

    def newer(self, conn: Any, search: JobSearch, after: int, size: int) -> JobPage:
        """The page of jobs just above `after`, shown newest first."""
        _, bottom, lowest, highest = self._edges(conn, low=after + 1, high=BIGINT_MAX)
        if bottom is None:
            older = after + 1 if lowest is not None and lowest <= after else None
            return JobPage([], older, None, None, search.window)
        ceiling = bottom + search.window - 1
        found = self._rows(conn, LIST_NEWER, search.params(bottom, ceiling, size + 1), named=True)
        rows = found.dicts()[:size]
        below = rows[0]["id"] if rows else bottom
        older = below if lowest < below else None
        rows.reverse()
        if len(found) > size:
            return JobPage(rows, older, rows[0]["id"], None, search.window)
        newer = ceiling if highest > ceiling else None
        return JobPage(rows, older, newer, (bottom, min(ceiling, highest)), search.window)

    def matching(self, conn: Any, search: JobSearch, *, windows: int, cap: int) -> Matching:
        """Up to `cap` jobs matching `search`, newest first, among the newest `windows`
        page windows of ids."""
        _, _, lowest, top = self._edges(conn, low=0, high=BIGINT_MAX)
        if top is None:
            return Matching([], False, (0, 0), True)
        floor = top - search.window * windows + 1
        found = self._rows(conn, MATCHING_IDS, search.params(floor, top, cap + 1))
        jobs = [(int(job_id), str(state)) for job_id, state in found[:cap]]
        return Matching(jobs, len(found) > cap, (max(floor, lowest), top), floor <= lowest)

    def states_of(self, conn: Any, ids: Sequence[int]) -> dict[int, tuple[str, int | None]]:
        """{id: (state, workflow id)} of the jobs among `ids` that exist."""
        found = self._rows(conn, STATES_OF, {"ids": list(ids)})
        return {row[0]: (row[1], row[2]) for row in found}

    def unfinished_workflows(self, conn: Any, workflow_ids: Sequence[int]) -> set[int]:
        """The workflows among `workflow_ids` that have a step not finished yet."""
        if not workflow_ids:
            return set()
        found = self._rows(conn, UNFINISHED_WORKFLOWS, {"ids": sorted(set(workflow_ids))})
        return {row[0] for row in found}

    def delete_finished(self, conn: Any, ids: Sequence[int]) -> list[int]:
        """Delete finished jobs, all or nothing; the ids deleted, in id order.

        Raises `JobNotFoundError` for an unknown id and `JobStateError` for a job not
        finished (cancel it first) or a step of a workflow with unfinished steps: a
        later step may read its result or wait for it again after a retry, which is why
        retention keeps such steps too. A workflow left without steps goes with them.
        """
        locked = {
            row[0]: row for row in self._rows(conn, LOCK_FOR_DELETE, {"ids": sorted(set(ids))})
        }
        missing = sorted(set(ids) - locked.keys())
        if missing:
            # Finished while this waited for its lock: moved to the history since.
            again = self._rows(conn, LOCK_FOR_DELETE, {"ids": missing})
            locked.update((row[0], row) for row in again)
            missing = sorted(set(ids) - locked.keys())
        if missing:
            many = "jobs with ids" if len(missing) > 1 else "job with id"
            raise JobNotFoundError(f"no {many} {', '.join(map(str, missing))}")
        problems = {
            job_id: f"job {job_id} is {state}; only completed, failed or cancelled jobs can "
            "be deleted: cancel it first"
            for job_id, state, _, _ in locked.values()
            if state not in ("completed", "failed", "cancelled")
        }
        busy = self.unfinished_workflows(conn, [row[2] for row in locked.values() if row[2]])
        problems.update(
            {
                job_id: f"job {job_id} is step {step!r} of workflow {workflow_id}, which has "
                "unfinished steps (they may read its result): cancel the workflow or let it "
                "finish first"
                for job_id, _, workflow_id, step in locked.values()
                if workflow_id in busy and job_id not in problems
            }
        )
        if problems:
            raise JobStateError(problems)
        deleted = self._rows(conn, DELETE_FINISHED, {"ids": sorted(locked)})
        emptied = sorted({row[1] for row in deleted if row[1] is not None})
        if emptied:
            self._rows(conn, DELETE_EMPTY_WORKFLOWS, {"ids": emptied})
        return sorted(row[0] for row in deleted)

    def related(
        self, conn: Any, workflow_id: int | None, job_id: int, depends_on: Sequence[int]
    ) -> Related:
        """A step's workflow, dependencies and (at most 200) dependents."""
        if workflow_id is None:
            return Related()
        found = self._rows(conn, WORKFLOW, {"id": workflow_id})
        known = run(conn, self.schema, steps_by_id(self.sql, depends_on)) if depends_on else {}
        dependents = self._rows(
            conn, DEPENDENTS, {"workflow_id": workflow_id, "id": job_id, "limit": 200}
        )
        return Related(
            workflow=(workflow_id, found[0][1]) if found else None,
            dependencies=[(d, *known.get(d, (None, None))) for d in depends_on],
            dependents=[(row[0], row[1], row[2]) for row in dependents],
        )

    def workflows(
        self, conn: Any, *, before: int | None, after: int | None, size: int
    ) -> list[dict[str, Any]]:
        """`size + 1` workflows below `before` (newest first) or above `after`
        (oldest first), each with its steps counted by state (`counts`, `total`)."""
        statement = WORKFLOWS_NEWER if after is not None else WORKFLOWS_OLDER
        low = 0 if after is None else after + 1
        high = BIGINT_MAX if before is None else before - 1
        params = {"low": low, "high": high, "limit": size + 1, "cap": STEP_COUNT_CAP}
        result: list[dict[str, Any]] = self._rows(conn, statement, params, named=True).dicts()
        return result

    def workflow(self, conn: Any, workflow_id: int, *, limit: int) -> dict[str, Any] | None:
        """A workflow (`id`, `name`, `created_at`), its steps counted by state (`counts`,
        `total`, counting at most WORKFLOW_COUNT_CAP) and its first `limit` steps."""
        found = self._rows(conn, WORKFLOW, {"id": workflow_id}, named=True).dicts()
        if not found:
            return None
        params = {"id": workflow_id, "cap": WORKFLOW_COUNT_CAP, "limit": limit}
        [(counts, total)] = self._rows(conn, WORKFLOW_COUNTS, params)
        steps = self._rows(conn, WORKFLOW_STEPS, params, named=True).dicts()
        return {**found[0], "counts": counts, "total": int(total), "steps": steps}

    def _edges(self, conn: Any, *, low: int, high: int) -> tuple[Any, Any, Any, Any]:
        [edges] = self._rows(conn, EDGES, {"low": low, "high": high})
        return edges[0], edges[1], edges[2], edges[3]
