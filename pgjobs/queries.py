"""Every SQL statement pgjobs runs, named, in one place.

Statements are written against `{jobs}` (the schema-qualified table) and bind every value
as a parameter; `Queries(schema)` quotes the identifiers once with `psycopg.sql`.
Batches travel as arrays and are expanded with `unnest`, so a batch of any size is one
statement and one round trip.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

from psycopg import sql

ENQUEUE = """
INSERT INTO {jobs} (queue, task, payload, priority, run_at, max_attempts, unique_key)
SELECT i.queue, i.task, i.payload::jsonb, i.priority,
       coalesce(i.run_at, now() + make_interval(secs => i.delay)),
       i.max_attempts, i.unique_key
FROM unnest(
    %(queues)s::text[], %(tasks)s::text[], %(payloads)s::text[], %(priorities)s::int[],
    %(run_ats)s::timestamptz[], %(delays)s::float8[], %(max_attempts)s::int[],
    %(unique_keys)s::text[]
) WITH ORDINALITY AS i(queue, task, payload, priority, run_at, delay, max_attempts,
                       unique_key, ord)
ORDER BY i.ord
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
DO NOTHING
RETURNING id, unique_key
"""

# ENQUEUE for one job, the common case: plain values instead of eight one-element arrays,
# which psycopg would adapt element by element and the server would unnest and sort.
ENQUEUE_ONE = """
INSERT INTO {jobs} (queue, task, payload, priority, run_at, max_attempts, unique_key)
VALUES (%(queue)s, %(task)s, %(payload)s::jsonb, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s)),
        %(max_attempts)s, %(unique_key)s)
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
DO NOTHING
RETURNING id, unique_key
"""

UNIQUE_KEY_HOLDERS = """
SELECT unique_key, id FROM {jobs}
WHERE unique_key = ANY(%(unique_keys)s::text[]) AND state IN ('available', 'running')
"""

# Claims up to `limit` waiting jobs in one statement. SKIP LOCKED makes concurrent
# claimers pass over each other's rows instead of waiting, and the row lock taken by the
# subquery is held until the UPDATE commits, so no two workers can claim one row.
CLAIM = """
WITH claimable AS (
    SELECT id FROM {jobs}
    WHERE state = 'available' AND run_at <= now() {queue_filter}
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {jobs} AS j
SET state = 'running', attempts = j.attempts + 1, started_at = now(),
    heartbeat_at = now(), worker_id = %(worker_id)s
FROM claimable
WHERE j.id = claimable.id
RETURNING j.id, j.queue, j.task, j.payload, j.attempts, j.max_attempts, j.run_at
"""
CLAIM_QUEUE_FILTER = "AND queue = %(queue)s"

# The rows of `ids` this worker still holds, locked in id order. Outcome writes and
# heartbeats touch the same rows; locking them in one order means they cannot deadlock.
HELD_BY_WORKER = """
    SELECT id FROM {jobs}
    WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND worker_id = %(worker_id)s
    ORDER BY id
    FOR UPDATE
"""

# Writes the outcomes of many attempts at once: completion, retry, failure, snooze and
# put-back are all "set this state, maybe push run_at, maybe append an error". The
# (id, attempts, running, worker) guard drops an outcome for a job that was meanwhile
# cancelled or rescued, so a late writer can never overwrite someone else's attempt.
# The worker that finished a job stays in `worker_id` (who ran it); a job that goes back
# to waiting is nobody's.
RECORD_OUTCOMES = """
WITH held AS ({held})
UPDATE {jobs} AS j
SET state = o.state,
    attempts = j.attempts + o.attempts_delta,
    max_attempts = j.max_attempts + o.max_attempts_delta,
    run_at = CASE WHEN o.state = 'available'
                  THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
    errors = CASE WHEN o.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(
                      o.error::jsonb || jsonb_build_object('at', now())) END,
    finished_at = CASE WHEN o.state IN ('completed', 'failed', 'cancelled')
                       THEN now() END,
    worker_id = CASE WHEN o.state = 'available' THEN NULL ELSE j.worker_id END,
    heartbeat_at = NULL
FROM unnest(
    %(ids)s::bigint[], %(attempts)s::int[], %(states)s::text[], %(delays)s::float8[],
    %(errors)s::text[], %(attempts_deltas)s::int[], %(max_attempts_deltas)s::int[]
) AS o(id, attempt, state, delay, error, attempts_delta, max_attempts_delta),
     held
WHERE j.id = held.id AND j.id = o.id AND j.attempts = o.attempt AND j.state = 'running'
  AND j.worker_id = %(worker_id)s
RETURNING j.id
"""

# The common case of RECORD_OUTCOMES, on its own because it is most of the traffic:
# attempts that succeeded. Two arrays instead of seven and no per-row CASE make it about
# twice as cheap for the database and for the worker that sends it.
COMPLETE_JOBS = """
WITH held AS ({held})
UPDATE {jobs} AS j
SET state = 'completed', finished_at = now(), heartbeat_at = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS o(id, attempt), held
WHERE j.id = held.id AND j.id = o.id AND j.attempts = o.attempt AND j.state = 'running'
  AND j.worker_id = %(worker_id)s
RETURNING j.id
"""

# One statement per interval keeps all of a worker's jobs alive; ids that do not come
# back were cancelled or rescued meanwhile, and their tasks are told to stop.
HEARTBEAT = """
WITH held AS ({held})
UPDATE {jobs} AS j SET heartbeat_at = now()
FROM held
WHERE j.id = held.id
RETURNING j.id
"""

# Returns running jobs whose worker stopped heart-beating. The transaction-scoped
# advisory lock lets only one worker at a time do it; the others find nothing to do.
RESCUE = """
WITH leader AS (
    SELECT pg_try_advisory_xact_lock(hashtext(%(lock_name)s)) AS held
), stale AS (
    SELECT id FROM {jobs}
    WHERE state = 'running'
      AND heartbeat_at < now() - make_interval(secs => %(rescue_after)s)
      AND (SELECT held FROM leader)
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {jobs} AS j
    SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'available' END,
        run_at = now(),
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'at', now(), 'worker', j.worker_id,
            'error', 'worker lost: ' || coalesce(j.worker_id, 'unknown')
                     || ' sent no heartbeat for ' || %(rescue_after)s || 's',
            'traceback', NULL)),
        worker_id = NULL,
        heartbeat_at = NULL
    FROM stale
    WHERE j.id = stale.id
    RETURNING j.id, j.queue, j.state
)
SELECT id, state, pg_notify(%(channel)s, queue) FROM rescued
"""

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

# Every column of a job, in the order of `pgjobs.job.Job`'s fields.
JOB_COLUMNS = """
id, queue, task, payload, state, priority, attempts, max_attempts, run_at, created_at,
started_at, finished_at, heartbeat_at, worker_id, unique_key, errors
"""

# A NULL filter means "any"; newest first by id, which the primary key serves backwards.
LIST_JOBS = """
SELECT {job_columns}
FROM {jobs}
WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
ORDER BY id DESC
LIMIT %(limit)s
"""

GET_JOB = """
SELECT {job_columns}
FROM {jobs}
WHERE id = %(id)s
"""

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

# A running job's worker finds out at its next heartbeat, and its outcome write is
# dropped by the (state = 'running') guard of RECORD_OUTCOMES.
CANCEL_JOBS = """
UPDATE {jobs}
SET state = 'cancelled', finished_at = now(), worker_id = NULL, heartbeat_at = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('available', 'running')
RETURNING id
"""

# Deletes one batch, so a large prune is many short transactions rather than one long
# lock. The literal state list lets the planner use the partial jobs_finished_idx.
PRUNE_FINISHED = """
WITH batch AS (
    SELECT id FROM {jobs}
    WHERE state IN ('completed', 'failed', 'cancelled')
      AND state = ANY(%(states)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {jobs} AS j
USING batch
WHERE j.id = batch.id
"""

# Every job of one queue, whatever its state (the demo starts each run afresh with it).
DELETE_QUEUE_JOBS = "DELETE FROM {jobs} WHERE queue = %(queue)s"

SCHEMA_EXISTS = "SELECT to_regclass(%(jobs_table)s) IS NOT NULL"


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema; hashed so any schema name fits in 63 bytes.

    Must match `pg_notify('pgjobs_' || md5(TG_TABLE_SCHEMA), ...)` in the trigger.
    """
    return "pgjobs_" + hashlib.md5(schema.encode()).hexdigest()


class Queries:
    """The statements above, bound to one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.jobs = sql.Identifier(schema, "jobs")
        self.channel = notify_channel(schema)
        self.jobs_table_name = self.jobs.as_string()

    def _compose(self, template: str, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(template).format(jobs=self.jobs, **parts)

    def _with_held(self, template: str) -> sql.Composed:
        return self._compose(template, held=self._compose(HELD_BY_WORKER))

    def _with_job_columns(self, template: str) -> sql.Composed:
        return self._compose(template, job_columns=sql.SQL(JOB_COLUMNS.strip()))

    @cached_property
    def enqueue(self) -> sql.Composed:
        return self._compose(ENQUEUE)

    @cached_property
    def enqueue_one(self) -> sql.Composed:
        return self._compose(ENQUEUE_ONE)

    @cached_property
    def unique_key_holders(self) -> sql.Composed:
        return self._compose(UNIQUE_KEY_HOLDERS)

    @cached_property
    def claim_any_queue(self) -> sql.Composed:
        return self._compose(CLAIM, queue_filter=sql.SQL(""))

    @cached_property
    def claim_from_queue(self) -> sql.Composed:
        return self._compose(CLAIM, queue_filter=sql.SQL(CLAIM_QUEUE_FILTER))

    @cached_property
    def record_outcomes(self) -> sql.Composed:
        return self._with_held(RECORD_OUTCOMES)

    @cached_property
    def complete_jobs(self) -> sql.Composed:
        return self._with_held(COMPLETE_JOBS)

    @cached_property
    def heartbeat(self) -> sql.Composed:
        return self._with_held(HEARTBEAT)

    @cached_property
    def rescue(self) -> sql.Composed:
        return self._compose(RESCUE)

    @cached_property
    def listen(self) -> sql.Composed:
        return sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))

    @cached_property
    def schema_exists(self) -> sql.Composed:
        return self._compose(SCHEMA_EXISTS)

    @cached_property
    def queue_stats(self) -> sql.Composed:
        return self._compose(QUEUE_STATS)

    @cached_property
    def list_jobs(self) -> sql.Composed:
        return self._with_job_columns(LIST_JOBS)

    @cached_property
    def get_job(self) -> sql.Composed:
        return self._with_job_columns(GET_JOB)

    @cached_property
    def lock_jobs_for_change(self) -> sql.Composed:
        return self._compose(LOCK_JOBS_FOR_CHANGE)

    @cached_property
    def retry_jobs(self) -> sql.Composed:
        return self._compose(RETRY_JOBS)

    @cached_property
    def cancel_jobs(self) -> sql.Composed:
        return self._compose(CANCEL_JOBS)

    @cached_property
    def prune_finished(self) -> sql.Composed:
        return self._compose(PRUNE_FINISHED)

    @cached_property
    def delete_queue_jobs(self) -> sql.Composed:
        return self._compose(DELETE_QUEUE_JOBS)
