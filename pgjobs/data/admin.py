"""Changing jobs and queues by hand: retry, cancel, pause, limits, bulk changes.

Retry and cancel lock the rows first, in id order, and change them in one statement, so
a change is all or nothing and no worker moves a row in between. `make_due` is
`pgjobs.testing`'s clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pgjobs.data.group import StatementGroup
from pgjobs.data.sql import fill
from pgjobs.types import JobState

Params = Mapping[str, Any]

# Retry and cancel lock their rows first (in id order, so two admins cannot deadlock),
# check them, then change them all in one statement: a change is all or nothing, and no
# worker can move a row in between.
LOCK_JOBS_FOR_CHANGE = """
SELECT id, state, unique_key FROM {jobs}
WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id
FOR UPDATE
"""

# A retried job gets at least one more attempt, so one that ran out can run again.
# Only INSERTs fire the wake-up trigger, so this statement notifies the workers itself;
# PostgreSQL folds the duplicate notifications of a transaction into one per queue.
RETRY_JOBS = """
WITH retried AS (
    UPDATE {jobs} AS j
    SET state = 'available',
        run_at = now(),
        finished_at = NULL,
        max_attempts = greatest(j.max_attempts, j.attempts + 1),
        worker_id = NULL,
        heartbeat_at = NULL
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state IN ('failed', 'cancelled')
    RETURNING j.id, j.queue
)
SELECT id, pg_notify(%(channel)s, queue) FROM retried
"""

# The worker that held a running job is told on the control channel (delivered on
# commit), so its task sees the stop flag at once; its next heartbeat would find out
# too, should the notification be lost. Its outcome write is dropped by the
# guard of HELD_OUTCOMES (still running). The caller has locked the rows.
CANCEL_JOBS = """
WITH target AS (
    SELECT id, state, worker_id FROM {jobs}
    WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('available', 'running')
), cancelled AS (
    UPDATE {jobs} AS j
    SET state = 'cancelled', finished_at = now(), worker_id = NULL, heartbeat_at = NULL
    FROM target
    WHERE j.id = target.id
    RETURNING j.id, target.state AS was, target.worker_id
)
SELECT id, CASE WHEN was = 'running' AND worker_id IS NOT NULL THEN pg_notify(
    %(control_channel)s, json_build_object('cancel', id, 'worker', worker_id)::text) END
FROM cancelled
"""

# Every job of one queue, whatever its state (the demo starts each run afresh with it).
DELETE_QUEUE_JOBS = "DELETE FROM {jobs} WHERE queue = %(queue)s"

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

SET_QUEUE_LIMIT = """
INSERT INTO {queues} AS q (name, max_waiting) VALUES (%(queue)s, %(max_waiting)s)
ON CONFLICT (name) DO UPDATE SET max_waiting = excluded.max_waiting, updated_at = now()
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
# after the last id.
LOCK_MATCHING = """
SELECT id, state, unique_key FROM {jobs}
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
    SELECT id, run_at FROM {jobs}
    WHERE state = 'available' AND run_at > now()
      AND run_at <= coalesce(%(until)s::timestamptz,
                             now() + make_interval(secs => %(advance)s::float8),
                             'infinity')
    FOR UPDATE
), shift AS (SELECT max(run_at) - now() AS by FROM due)
UPDATE {jobs} AS j SET run_at = j.run_at - shift.by
FROM due, shift
WHERE j.id = due.id
RETURNING j.id
"""


COUNT_MATCHING = fill(COUNT_MATCHING, matching=MATCHING_JOBS.strip())
LOCK_MATCHING = fill(LOCK_MATCHING, matching=MATCHING_JOBS.strip())


class AdminStatements(StatementGroup):
    """The changes of one schema, on a given connection (in its transaction)."""

    def lock_jobs(self, conn: Any, ids: Sequence[int]) -> dict[int, tuple[JobState, str | None]]:
        """Lock jobs (in id order) for a change: {id: (state, unique_key)} of those found."""
        locked = self._rows(conn, LOCK_JOBS_FOR_CHANGE, {"ids": list(ids)})
        return {job_id: (JobState(state), key) for job_id, state, key in locked}

    def retry_jobs(self, conn: Any, ids: Sequence[int]) -> set[int]:
        """Make failed or cancelled jobs available now and wake workers; the ids changed."""
        params = {"ids": list(ids), "channel": self.sql.channel}
        return {row[0] for row in self._rows(conn, RETRY_JOBS, params)}

    def cancel_jobs(self, conn: Any, ids: Sequence[int]) -> set[int]:
        """Cancel waiting or running jobs (locked by the caller); the ids changed.

        The workers holding the running ones are told on the control channel.
        """
        params = {"ids": list(ids), "control_channel": self.sql.control_channel}
        return {row[0] for row in self._rows(conn, CANCEL_JOBS, params)}

    def delete_queue(self, conn: Any, queue: str) -> int:
        """Delete every job of `queue`, whatever its state; how many."""
        return int(self._rows(conn, DELETE_QUEUE_JOBS, {"queue": queue}).rowcount)

    def pause_queue(self, conn: Any, queue: str) -> None:
        """Pause `queue` (workers skip it from their next claim)."""
        self._rows(conn, PAUSE_QUEUE, {"queue": queue})

    def resume_queue(self, conn: Any, queue: str) -> bool:
        """Resume `queue` and wake the workers that serve it; False, changing nothing, when
        it was not paused."""
        return bool(self._rows(conn, RESUME_QUEUE, {"queue": queue, "channel": self.sql.channel}))

    def set_queue_limit(self, conn: Any, queue: str, max_waiting: int | None) -> None:
        """Set (or with None remove) the waiting-jobs limit of `queue`."""
        self._rows(conn, SET_QUEUE_LIMIT, {"queue": queue, "max_waiting": max_waiting})

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
        locked = self._rows(conn, LOCK_MATCHING, params)
        return {job_id: (JobState(state), key) for job_id, state, key in locked}

    def make_due(
        self, conn: Any, *, until: datetime | None = None, advance: float | None = None
    ) -> list[int]:
        """Move the waiting jobs due by `until` (else now + `advance` seconds, else all of
        them) back in time so that they are due now; their ids."""
        return [row[0] for row in self._rows(conn, MAKE_DUE, {"until": until, "advance": advance})]
