"""Changing jobs and queues by hand: retry, cancel, pause, limits, bulk changes.

Retry and cancel lock the rows first, in id order, and change them in one statement, so
a change is all or nothing and no worker moves a row in between. `make_due` is
`pgjobs.testing`'s clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from pgjobs.data.group import StatementGroup
from pgjobs.data.sql import fill
from pgjobs.data.step_retry import (
    COUNT_RETRIED_DEPENDENCIES,
    LINK_DEPENDENTS,
    LOCK_DEPENDENCIES,
    STEPS_TO_RETRY,
)
from pgjobs.types import JobState

Params = Mapping[str, Any]


class RetriedStep(NamedTuple):
    """A workflow step about to be retried: what decides whether it may run."""

    id: int
    workflow_id: int
    step: str
    run_if: str
    depends_on: tuple[int, ...]


class Dependency(NamedTuple):
    """A dependency of a step about to be retried, locked: its step name and state."""

    id: int
    step: str
    state: JobState


@dataclass
class StepRetry:
    """How a retry writes workflow steps: each step's unfinished dependencies
    (`waiting`: 0 runs it now), the workflows they belong to, and the (parent, child)
    pairs of a step and an unfinished job it waits for, which the parent's `dependents`
    must list."""

    waiting: dict[int, int] = field(default_factory=dict)
    workflows: list[int] = field(default_factory=list)
    links: list[tuple[int, int]] = field(default_factory=list)


# Retry and cancel lock their rows first (in id order, so two admins cannot deadlock),
# check them, then change them all in one statement: a change is all or nothing, and no
# worker can move a row in between. Failed and cancelled jobs among them are first moved
# back from the history into jobs_live unchanged (REOPEN_JOBS: a retry changes them
# there; a refused change rolls the move back with it), so that every row a change may
# touch is a live row, locked here. Completed jobs stay where they are and are only read
# (LOOK_UP_FINISHED), for the refusal that names their state.
REOPEN = """
WITH reopened AS ({reopened}), gone AS (
    DELETE FROM {history} AS h
    WHERE h.id = ANY(ARRAY(SELECT id FROM reopened)) AND h.state IN ('failed', 'cancelled')
    RETURNING h.*
)
INSERT INTO {live} SELECT * FROM gone
"""
REOPEN_JOBS = fill(REOPEN, reopened="SELECT unnest(%(ids)s::bigint[]) AS id")
LOCK_JOBS_FOR_CHANGE = """
SELECT id, state, unique_key FROM {live}
WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id
FOR UPDATE
"""
LOOK_UP_FINISHED = """
SELECT id, state, unique_key FROM {history} WHERE id = ANY(%(ids)s::bigint[])
"""

# A retried job gets at least one more attempt, so one that ran out can run again. A
# workflow's step goes back `blocked` while `waiting` (its unfinished dependencies) is
# above 0, else `available`; a plain job's `waiting` is 0. Only INSERTs fire the wake-up
# trigger, so this statement notifies the workers of the available ones itself;
# PostgreSQL folds the duplicate notifications of a transaction into one per queue.
RETRY_JOBS = """
WITH o AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(waiting)s::int[]) AS o(id, waiting)
), retried AS (
    UPDATE {live} AS j
    SET state = CASE WHEN o.waiting > 0 THEN 'blocked' ELSE 'available' END,
        waiting_for = CASE WHEN j.workflow_id IS NULL THEN j.waiting_for ELSE o.waiting END,
        run_at = now(),
        finished_at = NULL,
        max_attempts = greatest(j.max_attempts, j.attempts + 1),
        worker_id = NULL,
        heartbeat_at = NULL
    FROM o
    WHERE j.id = o.id AND j.state IN ('failed', 'cancelled')
    RETURNING j.id, j.queue, j.state
)
SELECT id, CASE WHEN state = 'available' THEN pg_notify(%(channel)s, queue) END FROM retried
"""

# The worker that held a running job is told on the control channel (delivered on
# commit), so its task sees the stop flag at once; its next heartbeat would find out
# too, should the notification be lost. Its outcome write is dropped by the
# guard of HELD_OUTCOMES (still running). The caller has locked the rows. Cancelled
# workflow steps are settled in this statement (migration 0009's settle_steps): their
# blocked dependents are cancelled in turn, down the graph, unless they run if their
# dependencies merely finished, which releases them. `App.result` waiters are woken.
CANCEL_JOBS = """
WITH target AS (
    SELECT id, state, worker_id FROM {live}
    WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('available', 'running', 'blocked')
), cancelled AS (
    UPDATE {live} AS j
    SET state = 'cancelled', finished_at = now(), worker_id = NULL, heartbeat_at = NULL
    FROM target
    WHERE j.id = target.id
    RETURNING j.id, j.workflow_id, target.state AS was, target.worker_id
)
SELECT id, CASE WHEN was = 'running' AND worker_id IS NOT NULL THEN pg_notify(
    %(control_channel)s, json_build_object('cancel', id, 'worker', worker_id)::text) END,
    (SELECT {settle_steps}(array_agg(id), array_agg('cancelled'::text))
     FROM cancelled WHERE workflow_id IS NOT NULL) AS released,
    (SELECT pg_notify(%(results_channel)s, '') FROM cancelled LIMIT 1) AS woken
FROM cancelled
"""

# `pgjobs cancel --workflow ID`: whether the workflow exists, then its unfinished steps,
# locked in id order (by the partial jobs_workflow_step_idx) for CANCEL_JOBS.
WORKFLOW_EXISTS = "SELECT EXISTS (SELECT FROM {workflows} WHERE id = %(workflow_id)s)"
LOCK_WORKFLOW_STEPS = """
SELECT id FROM {live}
WHERE workflow_id = %(workflow_id)s AND state IN ('available', 'running', 'blocked')
ORDER BY id
FOR UPDATE
"""

# Every job of one queue, whatever its state (the demo starts each run afresh with it).
DELETE_QUEUE_JOBS = """
WITH live AS (DELETE FROM {live} WHERE queue = %(queue)s RETURNING 1),
     finished AS (DELETE FROM {history} WHERE queue = %(queue)s RETURNING 1)
SELECT (SELECT count(*) FROM live) + (SELECT count(*) FROM finished)
"""

# Pausing needs no message, since every claim reads the setting.
PAUSE_QUEUE = """
INSERT INTO {queues} (name, paused) VALUES (%(queue)s, true)
ON CONFLICT (name) DO UPDATE SET paused = true, updated_at = now()
"""
# Resuming wakes the workers as an insert would (the queue name on the jobs channel). A
# queue that is not paused is left alone: one without a row gets none, which `pgjobs
# queues` would list forever. A row comes back only for a queue that was paused.
RESUME_QUEUE = """
UPDATE {queues} SET paused = false, updated_at = now()
WHERE name = %(queue)s AND paused
RETURNING pg_notify(%(channel)s, name)
"""

# Each limit is changed only when asked (`set_*`). A changed max_running wakes the
# queue's workers, as a resume does: jobs a lower limit held back may run now.
SET_QUEUE_LIMIT = """
INSERT INTO {queues} AS q (name, max_waiting, max_running)
VALUES (%(queue)s, %(max_waiting)s, %(max_running)s)
ON CONFLICT (name) DO UPDATE SET
    max_waiting = CASE WHEN %(set_waiting)s THEN excluded.max_waiting ELSE q.max_waiting END,
    max_running = CASE WHEN %(set_running)s THEN excluded.max_running ELSE q.max_running END,
    updated_at = now()
RETURNING CASE WHEN %(set_running)s THEN pg_notify(%(channel)s, name) END
"""

# Bulk retry and cancel by filter. A NULL filter matches everything; `states` is always
# given (the states the change applies to).
MATCHING_JOBS = """
state = ANY(%(states)s::text[])
AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
AND (%(older_than)s::float8 IS NULL
     OR created_at < now() - make_interval(secs => %(older_than)s::float8))
"""

# How many jobs match, and the highest id among them: the bulk change stops there, so
# jobs enqueued while it runs are not swept up in it.
COUNT_MATCHING = "SELECT count(*), coalesce(max(id), 0) FROM {jobs} WHERE {matching}"

# One batch of a bulk change, locked in id order like LOCK_JOBS_FOR_CHANGE; the caller
# changes it with RETRY_JOBS or CANCEL_JOBS in the same short transaction and continues
# after the last id. A retry's batch is first moved back from the history, like
# REOPEN_JOBS: the next `batch_size` matching finished jobs there, of which the lowest
# ids of both tables then make the batch (any left over are the next batch's).
REOPENED_MATCHING = """
    SELECT id FROM {history}
    WHERE {matching} AND id > %(after_id)s AND id <= %(up_to_id)s
    ORDER BY id
    LIMIT %(batch_size)s
    FOR UPDATE
"""
LOCK_MATCHING = """
SELECT id, state, unique_key FROM {live}
WHERE {matching} AND id > %(after_id)s AND id <= %(up_to_id)s
ORDER BY id
LIMIT %(batch_size)s
FOR UPDATE
"""

# Runs the waiting jobs due by `until` (a moment, else now + `advance` seconds, else all
# of them) as if the clock had reached it: they move back in time together, keeping their
# order, so the latest of them is due now. The claim then finds them like any due job.
MAKE_DUE = """
WITH due AS (
    SELECT id, run_at FROM {live}
    WHERE state = 'available' AND run_at > now()
      AND run_at <= coalesce(%(until)s::timestamptz,
                             now() + make_interval(secs => %(advance)s::float8),
                             'infinity')
    FOR UPDATE
), shift AS (SELECT max(run_at) - now() AS by FROM due)
UPDATE {live} AS j SET run_at = j.run_at - shift.by
FROM due, shift
WHERE j.id = due.id
RETURNING j.id
"""


COUNT_MATCHING = fill(COUNT_MATCHING, matching=MATCHING_JOBS.strip())
LOCK_MATCHING = fill(LOCK_MATCHING, matching=MATCHING_JOBS.strip())
REOPEN_MATCHING = fill(
    REOPEN, reopened=fill(REOPENED_MATCHING, matching=MATCHING_JOBS.strip()).strip()
)


class AdminStatements(StatementGroup):
    """The changes of one schema, on a given connection (in its transaction)."""

    def lock_jobs(self, conn: Any, ids: Sequence[int]) -> dict[int, tuple[JobState, str | None]]:
        """Lock jobs (in id order) for a change: {id: (state, unique_key)} of those found."""
        params = {"ids": list(ids)}
        self._rows(conn, REOPEN_JOBS, params)
        locked = list(self._rows(conn, LOCK_JOBS_FOR_CHANGE, params))
        missing = set(ids).difference(row[0] for row in locked)
        if missing:
            locked += self._rows(conn, LOOK_UP_FINISHED, {"ids": sorted(missing)})
        return {job_id: (JobState(state), key) for job_id, state, key in locked}

    def retry_jobs(
        self,
        conn: Any,
        ids: Sequence[int],
        retry: StepRetry | None = None,
    ) -> set[int]:
        """Make failed or cancelled jobs runnable again and wake workers; the ids changed.

        Plain jobs become available now. Workflow steps follow `retry` (job_checks.py's
        `plan_retry`): `blocked` while they have unfinished dependencies, and each step
        retried counts again in the blocked steps that depend on it.
        """
        retry = retry or StepRetry()
        params = {
            "ids": list(ids),
            "waiting": [retry.waiting.get(job_id, 0) for job_id in ids],
            "channel": self.sql.channel,
        }
        changed = {row[0] for row in self._rows(conn, RETRY_JOBS, params)}
        steps = [job_id for job_id in ids if job_id in changed and job_id in retry.waiting]
        if not steps:
            return changed
        counted = self._rows(
            conn,
            COUNT_RETRIED_DEPENDENCIES,
            {"ids": steps, "workflows": sorted(set(retry.workflows))},
        )
        links = [(p, c) for p, c in retry.links if c in changed] + [(p, c) for p, c in counted]
        if links:
            self._rows(
                conn,
                LINK_DEPENDENTS,
                {"parents": [p for p, _ in links], "children": [c for _, c in links]},
            )
        return changed

    def steps_to_retry(
        self, conn: Any, ids: Sequence[int]
    ) -> tuple[dict[int, RetriedStep], dict[int, Dependency]]:
        """The workflow steps among `ids` (locked by the caller), and their dependencies,
        locked now: what decides whether each may be retried and how long it waits."""
        steps = {
            row[0]: RetriedStep(row[0], row[1], row[2], row[3], tuple(row[4] or ()))
            for row in self._rows(conn, STEPS_TO_RETRY, {"ids": list(ids)})
        }
        wanted = sorted({dependency for step in steps.values() for dependency in step.depends_on})
        if not wanted:
            return steps, {}
        locked = list(self._rows(conn, LOCK_DEPENDENCIES, {"ids": wanted}))
        missing = set(wanted).difference(row[0] for row in locked)
        if missing:
            locked += self._rows(conn, LOCK_DEPENDENCIES, {"ids": sorted(missing)})
        return steps, {row[0]: Dependency(row[0], row[1], JobState(row[2])) for row in locked}

    def cancel_jobs(self, conn: Any, ids: Sequence[int]) -> set[int]:
        """Cancel waiting, blocked or running jobs (locked by the caller); the ids changed.

        The workers holding the running ones are told on the control channel; cancelled
        workflow steps settle their dependents (cancelling them in turn unless they run
        whatever their dependencies' outcome); `App.result` waiters are woken.
        """
        params = {
            "ids": list(ids),
            "control_channel": self.sql.control_channel,
            "results_channel": self.sql.results_channel,
        }
        return {row[0] for row in self._rows(conn, CANCEL_JOBS, params)}

    def lock_workflow(self, conn: Any, workflow_id: int) -> list[int] | None:
        """Lock the unfinished steps of a workflow (in id order); their ids, or None when
        there is no such workflow."""
        [(exists,)] = self._rows(conn, WORKFLOW_EXISTS, {"workflow_id": workflow_id})
        if not exists:
            return None
        return [
            row[0] for row in self._rows(conn, LOCK_WORKFLOW_STEPS, {"workflow_id": workflow_id})
        ]

    def delete_queue(self, conn: Any, queue: str) -> int:
        """Delete every job of `queue`, whatever its state; how many."""
        [(deleted,)] = self._rows(conn, DELETE_QUEUE_JOBS, {"queue": queue})
        return int(deleted)

    def pause_queue(self, conn: Any, queue: str) -> None:
        """Pause `queue` (workers skip it from their next claim)."""
        self._rows(conn, PAUSE_QUEUE, {"queue": queue})

    def resume_queue(self, conn: Any, queue: str) -> bool:
        """Resume `queue` and wake the workers that serve it; False, changing nothing, when
        it was not paused."""
        return bool(self._rows(conn, RESUME_QUEUE, {"queue": queue, "channel": self.sql.channel}))

    def set_queue_limit(self, conn: Any, queue: str, limits: Mapping[str, int | None]) -> None:
        """Set (None: remove) the limits of `queue` named in `limits` (`max_waiting`,
        `max_running`), leaving the other as it is."""
        params = {
            "queue": queue,
            "max_waiting": limits.get("max_waiting"),
            "max_running": limits.get("max_running"),
            "set_waiting": "max_waiting" in limits,
            "set_running": "max_running" in limits,
            "channel": self.sql.channel,
        }
        self._rows(conn, SET_QUEUE_LIMIT, params)

    def count_matching(self, conn: Any, matching: Params) -> tuple[int, int]:
        """(how many jobs match, the highest matching id) for a bulk change's filter.

        `matching` holds `states`, `queues`, `tasks` (None: any) and `older_than`
        (seconds since enqueue, None: any).
        """
        [(count, last_id)] = self._rows(conn, COUNT_MATCHING, matching)
        return int(count), int(last_id)

    def lock_matching(
        self, conn: Any, matching: Params, *, after_id: int, up_to_id: int, batch_size: int
    ) -> dict[int, tuple[JobState, str | None]]:
        """Lock the next batch of matching jobs after `after_id`, like `lock_jobs`."""
        params = {**matching, "after_id": after_id, "up_to_id": up_to_id, "batch_size": batch_size}
        if set(matching["states"]) & {"failed", "cancelled"}:
            self._rows(conn, REOPEN_MATCHING, params)
        locked = self._rows(conn, LOCK_MATCHING, params)
        return {job_id: (JobState(state), key) for job_id, state, key in locked}

    def make_due(
        self, conn: Any, *, until: datetime | None = None, advance: float | None = None
    ) -> list[int]:
        """Move the waiting jobs due by `until` (else now + `advance` seconds, else all of
        them) back in time so that they are due now; their ids."""
        return [row[0] for row in self._rows(conn, MAKE_DUE, {"until": until, "advance": advance})]
