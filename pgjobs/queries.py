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

# Each INSERT below comes in two forms: with this clause when a row has a unique_key,
# without it otherwise. The clause makes every row a speculative insertion, which costs
# about a fifth of a bulk insert, for nothing when no row has a key.
SKIP_HELD_UNIQUE_KEYS = """
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
DO NOTHING
"""

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
{on_conflict}
RETURNING id, unique_key
"""

# ENQUEUE for one job, the common case: plain values instead of eight one-element arrays,
# which psycopg would adapt element by element and the server would unnest and sort. The
# placeholders are positional, in the order of JobRow's fields, so a row is its own
# parameters (psycopg maps named ones to positions at every execute: 8 µs of a 130 µs
# single enqueue).
ENQUEUE_ONE = """
INSERT INTO {jobs} (queue, task, payload, priority, run_at, max_attempts, unique_key)
VALUES (%s, %s, %s::jsonb, %s,
        coalesce(%s::timestamptz, now() + make_interval(secs => %s)),
        %s, %s)
{on_conflict}
RETURNING id, unique_key
"""

# Large batches of plain jobs (no unique key, no run_at or delay: the column defaults
# give run_at and every other column) go straight into the table by one COPY, streamed
# while the producer still validates later rows. COPY returns nothing, so their ids are
# drawn first, in ascending order, by a function of the schema (migration 0006: it runs
# with its owner's rights, so a producer needs no grant on the sequence).
RESERVE_JOB_IDS = "SELECT {reserve_job_ids}(%(count)s)"
COPY_JOBS = "COPY {jobs} (id, queue, task, payload, priority, max_attempts) FROM STDIN"

# Large batches: COPY into a temporary table, then one INSERT from it. COPY sends the rows
# in PostgreSQL's binary format, several times cheaper on both sides than adapting and
# parsing eight arrays of that size. The table lives for the statement's transaction
# only (dropped after use, and ON COMMIT DROP as a net), so it also works through a
# transaction-mode pooler. Temporary tables need no grant beyond PUBLIC's default TEMP.
STAGING_TABLE = "pgjobs_enqueue_staging"
CREATE_STAGING = """
CREATE TEMPORARY TABLE {staging} (
    queue text, task text, payload text, priority int, run_at timestamptz,
    delay float8, max_attempts int, unique_key text, ord bigint
) ON COMMIT DROP
"""
# The binary COPY's column types, in the order of CREATE_STAGING.
STAGING_TYPES = (
    "text", "text", "text", "int4", "timestamptz", "float8", "int4", "text", "int8",
)  # fmt: skip
COPY_TO_STAGING = "COPY {staging} FROM STDIN (FORMAT BINARY)"
ENQUEUE_STAGED = """
INSERT INTO {jobs} (queue, task, payload, priority, run_at, max_attempts, unique_key)
SELECT s.queue, s.task, s.payload::jsonb, s.priority,
       coalesce(s.run_at, now() + make_interval(secs => s.delay)),
       s.max_attempts, s.unique_key
FROM {staging} AS s
ORDER BY s.ord
{on_conflict}
RETURNING id, unique_key
"""
DROP_STAGING = "DROP TABLE {staging}"

UNIQUE_KEY_HOLDERS = """
SELECT unique_key, id FROM {jobs}
WHERE unique_key = ANY(%(unique_keys)s::text[]) AND state IN ('available', 'running')
"""

# Claims up to `limit` waiting jobs in one statement. SKIP LOCKED makes concurrent
# claimers pass over each other's rows instead of waiting, and the row lock taken by the
# subquery is held until the UPDATE commits, so no two workers can claim one row.
# The attempt is counted and `started_at` set at the claim. `began_at` is set for the
# first `begin` jobs, which the worker's threads may start at once, and stays NULL for
# the jobs claimed ahead until the worker readies them for its threads (READY_JOBS):
# threads start no job whose `began_at` is NULL, so a rescue can tell a job that waited
# in a lost worker's buffer from one that may have run (RESCUE).
# The rows come back in no particular order: the worker's buffer orders what it holds.
# The UPDATE finds the claimed rows by an array of their ids, for the reasons given at
# HELD_OUTCOMES.
CLAIM = """
WITH {async_commit}claimable AS (
    SELECT id FROM {jobs}
    WHERE state = 'available' AND run_at <= now() {queue_filter}{async_condition}
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {jobs} AS j
SET state = 'running', attempts = j.attempts + 1, started_at = now(),
    began_at = CASE WHEN j.id = ANY(ARRAY(SELECT id FROM claimable LIMIT %(begin)s))
                    THEN now() END,
    heartbeat_at = now(), worker_id = %(worker_id)s
WHERE j.id = ANY(ARRAY(SELECT id FROM claimable))
RETURNING j.id, j.queue, j.task, j.payload::text, j.attempts, j.max_attempts,
          date_part('epoch', j.run_at), j.scheduled_at, j.priority, j.began_at IS NOT NULL
"""
# A claim commits with the server's durability (`synchronous_commit` as configured), as
# outcomes and heartbeats do. `pgjobs work --async-claim-commit` lets it commit without
# waiting for its WAL to reach the disk (for this transaction only), which shortens the
# time from a job's commit to its start. The price, should the server crash (or fail
# over) before that WAL is flushed: the claim is undone, the job is `available` again
# with its attempts unchanged and no entry in `errors`, and it runs again as the same
# attempt while the first run's outcome no longer matches and is dropped.
ASYNC_CLAIM_COMMIT = """async_commit AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), """
ASYNC_CLAIM_CONDITION = "\n      AND EXISTS (SELECT FROM async_commit)"
# Paused queues (queue control, below) are skipped. A claim from one queue checks the
# setting once, before scanning anything; a claim from every queue filters its rows with
# a hashed list of the paused queues, read once per claim.
CLAIM_QUEUE_FILTER = """AND queue = %(queue)s
      AND NOT EXISTS (SELECT FROM {queues} WHERE name = %(queue)s AND paused)"""
CLAIM_ANY_QUEUE_FILTER = "AND queue NOT IN (SELECT name FROM {queues} WHERE paused)"

# The rows of `ids` this worker still holds, locked in id order. Outcome writes and
# heartbeats touch the same rows; locking them in one order means they cannot deadlock.
HELD_BY_WORKER = """
    SELECT id FROM {jobs}
    WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND worker_id = %(worker_id)s
    ORDER BY id
    FOR UPDATE
"""

# The outcomes in `{outcomes}` (a row source `o` with at least `id` and `attempt`) whose
# attempt this worker is still running, their rows locked in id order like
# HELD_BY_WORKER's: the sorted outcomes drive the loop. An outcome whose job was
# meanwhile cancelled or rescued (no longer this attempt, running and ours) is left out,
# so a late writer can never overwrite someone else's attempt; FOR UPDATE checks that
# again on the newest row after a wait, and the lock keeps it true until the write
# commits, so the UPDATE that follows only has to find the rows by id.
# Each outcome looks up its own row by id, whatever the plan: one UPDATE joining the
# outcomes, the locked rows and `jobs` got, as a prepared statement's generic plan, a
# scan of every running job once per outcome (tests/test_outcome_plans.py).
#
# CLAIM, COMPLETE_JOBS and HEARTBEAT then update the locked rows found by one array of
# their ids, `WHERE j.id = ANY(ARRAY(SELECT id FROM held))`, not by a join: whatever the
# estimates, that is one pass over the primary key. Joined by id, a batch of 1,000 was
# hash-joined to a scan of the whole table (60,000 rows: 25 ms a batch instead of 10), and
# a join by id plus the array went quadratic when the statistics were stale (the array
# scanned again for each row: 60 ms a claim of 460). A row updated by someone else since
# the statement began is followed to its newest version as usual, and still matches.
# RECORD_OUTCOMES sets each row from its own outcome, so it keeps the join by id: the rarer
# path (failures, retries, snoozes), and at worst one scan of the table per batch.
HELD_OUTCOMES = """
    SELECT o.* FROM (SELECT * FROM {outcomes} ORDER BY id) AS o
    CROSS JOIN LATERAL (
        SELECT FROM {jobs} AS j
        WHERE j.id = o.id AND j.attempts = o.attempt
          AND j.state = 'running' AND j.worker_id = %(worker_id)s
        FOR UPDATE
    ) AS held
"""

# Writes the outcomes of many attempts at once: completion, retry, failure, snooze and
# put-back are all "set this state, maybe push run_at, maybe append an error".
# The worker that finished a job stays in `worker_id` (who ran it); a job that goes back
# to waiting is nobody's. A NULL delay keeps `run_at`: a job handed back unstarted (at
# shutdown, or surplus to the worker's buffer) keeps its place in line, and other
# workers are woken for it at once, since only INSERTs fire the wake-up trigger.
OUTCOMES = """unnest(
        %(ids)s::bigint[], %(attempts)s::int[], %(states)s::text[], %(delays)s::float8[],
        %(errors)s::text[], %(attempts_deltas)s::int[], %(max_attempts_deltas)s::int[]
    ) AS o(id, attempt, state, delay, error, attempts_delta, max_attempts_delta)"""
RECORD_OUTCOMES = """
WITH o AS ({held_outcomes})
UPDATE {jobs} AS j
SET state = o.state,
    attempts = j.attempts + o.attempts_delta,
    max_attempts = j.max_attempts + o.max_attempts_delta,
    run_at = CASE WHEN o.state = 'available' AND o.delay IS NOT NULL
                  THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
    errors = CASE WHEN o.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(
                      o.error::jsonb || jsonb_build_object('at', now())) END,
    finished_at = CASE WHEN o.state IN ('completed', 'failed', 'cancelled')
                       THEN now() END,
    worker_id = CASE WHEN o.state = 'available' THEN NULL ELSE j.worker_id END,
    heartbeat_at = NULL
FROM o
WHERE j.id = o.id
RETURNING j.id, CASE WHEN o.state = 'available' AND o.delay IS NULL
                     THEN pg_notify(%(channel)s, j.queue) END
"""

# The common case of RECORD_OUTCOMES, on its own because it is most of the traffic:
# attempts that succeeded. Two arrays instead of seven and no per-row CASE make it about
# twice as cheap for the database and for the worker that sends it.
ATTEMPTS = "unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS o(id, attempt)"
COMPLETE_JOBS = """
WITH o AS ({held_outcomes})
UPDATE {jobs} AS j
SET state = 'completed', finished_at = now(), heartbeat_at = NULL
WHERE j.id = ANY(ARRAY(SELECT id FROM o))
RETURNING j.id
"""

# Readies claimed jobs for the worker's threads, just before they need them: from now on
# their attempt may begin, and a rescue counts it as lost (RESCUE). The worker lists in
# its own row every job it readied and has not settled yet (ready, running, or with its
# outcome not written), as ranges of ids (a claim takes ids that mostly follow each
# other): one small row update per batch instead of one update per job.
# It commits without waiting for the disk (for this transaction only), since threads
# wait for it; other sessions see it at once all the same, and it matters only to the
# rescue of a worker that dies: only if the server crashed and lost it, and the worker
# then died too before the job ended, would a job that ran be returned as unrun.
READY_JOBS = """
WITH async_commit AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
)
UPDATE {workers} SET ready_jobs = %(ranges)s::int8multirange
WHERE id = %(worker_id)s AND EXISTS (SELECT FROM async_commit)
RETURNING true
"""
# The same, one row at a time, for a worker whose row is missing (not registered yet, or
# forgotten after a long silence): `began_at`, as the claim sets it.
READY_JOB_ROWS = """
UPDATE {jobs} SET began_at = now()
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND worker_id = %(worker_id)s
"""

# One statement per interval keeps all of a worker's jobs alive; ids that do not come
# back were cancelled or rescued meanwhile, and their tasks are told to stop.
HEARTBEAT = """
WITH held AS ({held})
UPDATE {jobs} AS j SET heartbeat_at = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM held))
RETURNING j.id
"""

# Returns running jobs whose worker stopped heart-beating. A job whose attempt may have
# begun (readied: `began_at` set by the claim, or listed in its worker's
# `ready_jobs`; a worker's threads start no other) lost that attempt: back to
# `available` (or `failed` when it has no attempt left) with a "worker lost" entry in
# `errors`. A job that only waited, claimed, in the lost worker's buffer never ran: it
# goes back with its attempt given back, its place in line kept, and nothing in `errors`.
# The transaction-scoped advisory lock lets only one worker at a time do it; the others
# find nothing to do.
RESCUE = """
WITH leader AS (
    SELECT pg_try_advisory_xact_lock(hashtext(%(lock_name)s)) AS held
), stale AS (
    SELECT j.id, j.began_at IS NOT NULL OR j.id <@ w.ready_jobs IS TRUE AS began
    FROM {jobs} AS j
    LEFT JOIN {workers} AS w ON w.id = j.worker_id
    WHERE j.state = 'running'
      AND j.heartbeat_at < now() - make_interval(secs => %(rescue_after)s)
      AND (SELECT held FROM leader)
    FOR UPDATE OF j SKIP LOCKED
), rescued AS (
    UPDATE {jobs} AS j
    SET state = CASE WHEN stale.began AND j.attempts >= j.max_attempts
                     THEN 'failed' ELSE 'available' END,
        attempts = CASE WHEN stale.began THEN j.attempts ELSE j.attempts - 1 END,
        run_at = CASE WHEN stale.began THEN now() ELSE j.run_at END,
        finished_at = CASE WHEN stale.began AND j.attempts >= j.max_attempts THEN now() END,
        errors = CASE WHEN NOT stale.began THEN j.errors
                 ELSE j.errors || jsonb_build_array(jsonb_build_object(
                    'attempt', j.attempts, 'at', now(), 'worker', j.worker_id,
                    'error', 'worker lost: ' || coalesce(j.worker_id, 'unknown')
                             || ' sent no heartbeat for ' || %(rescue_after)s || 's',
                    'traceback', NULL)) END,
        worker_id = NULL,
        heartbeat_at = NULL
    FROM stale
    WHERE j.id = stale.id
    RETURNING j.id, j.queue, j.state, stale.began
)
SELECT id, state, began, pg_notify(%(channel)s, queue) FROM rescued
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
started_at, finished_at, heartbeat_at, worker_id, unique_key, errors, scheduled_at,
began_at
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

# Whether `pgjobs migrate` created the jobs table, and whether this role may read the
# schema's Alembic revision (least-privilege roles may not): a statement that cannot
# fail, so a caller's transaction survives it (pgjobs.schema_revision).
SCHEMA_STATE = """
SELECT to_regclass(%(jobs_table)s) IS NOT NULL,
       coalesce(has_table_privilege(to_regclass(%(version_table)s), 'SELECT'), false)
"""
SCHEMA_REVISION = "SELECT version_num FROM {alembic_version}"

# --- behind a pooler: the worker's notification check ---------------------------------
# A notification on the schema's channel, sent when the transaction commits.
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"
# Who the server thinks its client is, to tell a direct connection from a pooled one.
CLIENT_ENDPOINT = "SELECT host(inet_client_addr()), inet_client_port(), pg_backend_pid()"

# --- queue control: pause, limits, bulk changes, retention ----------------------------
# (CLAIM_*_FILTER above skip paused queues; CANCEL_JOBS tells the worker of a running job.)

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

# The producers' cache of limits: a handful of rows, read at most once a second.
QUEUE_LIMITS = "SELECT name, max_waiting FROM {queues} WHERE max_waiting IS NOT NULL"

# Reads at most `up_to` entries of the partial fetch index (jobs_fetch_idx), so the
# count costs the same for a queue of a hundred jobs and one of ten million.
COUNT_WAITING = """
SELECT count(*) FROM (
    SELECT FROM {jobs} WHERE queue = %(queue)s AND state = 'available' LIMIT %(up_to)s
) AS waiting
"""

# `pgjobs queues`: the statistics of QUEUE_STATS beside each queue's settings; a queue
# with settings and no jobs, or jobs and no settings, has a row too.
QUEUE_OVERVIEW = """
SELECT coalesce(s.queue, q.name) AS name, s.*, coalesce(q.paused, false) AS paused,
       q.max_waiting
FROM ({queue_stats}) AS s
FULL JOIN {queues} AS q ON q.name = s.queue
ORDER BY 1
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

# Maintenance that one worker at a time does (retention): a session lock, released at
# the end of the pass or when the connection drops with its worker.
TRY_MAINTENANCE_LOCK = "SELECT pg_try_advisory_lock(hashtext(%(lock_name)s))"
RELEASE_MAINTENANCE_LOCK = "SELECT pg_advisory_unlock(hashtext(%(lock_name)s))"


# --- observability: the worker registry and the queue gauges ---------------------------

# A worker's row, inserted at start and refreshed with every beat. It also says whether
# this worker is the maintenance leader: the longest-running worker not lost (silent for
# less than its own rescue_after). The subquery reads the rows as they were before this
# statement, so two workers can both think they lead for one beat; what the leader does
# is idempotent.
REGISTER_WORKER = """
WITH me AS (
    INSERT INTO {workers} AS w
        (id, host, pid, queues, concurrency, version, rescue_after)
    VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(version)s,
            %(rescue_after)s)
    ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now()
    RETURNING w.id, w.started_at
)
SELECT NOT EXISTS (
    SELECT FROM {workers} AS other
    WHERE other.id <> me.id
      AND other.last_heartbeat_at > now() - make_interval(secs => other.rescue_after)
      AND (other.started_at, other.id) < (me.started_at, me.id)
) AS leader
FROM me
"""

DEREGISTER_WORKER = "DELETE FROM {workers} WHERE id = %(id)s"

# Rows of workers lost (silent past their rescue_after) for longer than `keep_lost`:
# until then `pgjobs workers` lists them as recently lost.
FORGET_LOST_WORKERS = """
DELETE FROM {workers}
WHERE last_heartbeat_at < now() - make_interval(secs => rescue_after + %(keep_lost)s)
RETURNING id
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
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, w.version, w.rescue_after,
       w.started_at, w.last_heartbeat_at,
       w.last_heartbeat_at <= now() - make_interval(secs => w.rescue_after) AS lost,
       coalesce(tasks.tasks, '{{}}'::jsonb) AS tasks,
       coalesce(ids.job_ids, '{{}}'::bigint[]) AS job_ids
FROM {workers} AS w
LEFT JOIN tasks ON tasks.worker_id = w.id
LEFT JOIN ids ON ids.worker_id = w.id
ORDER BY lost, w.started_at, w.id
"""

# The queue gauges, sampled by the maintenance leader: jobs runnable now and the oldest
# one's wait, per queue, from the partial fetch index alone.
QUEUE_DEPTHS = """
SELECT queue, count(*), extract(epoch FROM now() - min(run_at))::float8
FROM {jobs}
WHERE state = 'available' AND run_at <= now()
GROUP BY queue
"""

# --- periodic jobs -------------------------------------------------------------------

SCHEDULE_STATES = """
SELECT name, expression, timezone, done_until, last_tick, last_job_id, updated_at
FROM {schedules}
WHERE %(names)s::text[] IS NULL OR name = ANY(%(names)s::text[])
ORDER BY name
"""

# A schedule seen for the first time starts at `done_until` (the worker's now): no tick
# before it is ever enqueued, so a new schedule does not fire at once for a time that
# passed before it existed. A row that exists is left alone: during a rolling deploy two
# versions of an app may declare one task with different schedules, and neither may
# reset the other's progress (worker/periodic.py).
REGISTER_SCHEDULES = """
INSERT INTO {schedules} (name, expression, timezone, done_until)
SELECT i.name, i.expression, i.timezone, %(done_until)s
FROM unnest(%(names)s::text[], %(expressions)s::text[], %(timezones)s::text[])
    AS i(name, expression, timezone)
ON CONFLICT (name) DO NOTHING
"""

# `pgjobs.testing`'s clock: a schedule whose row says otherwise starts afresh at
# `done_until`, as if a worker of this app had been running all along.
RESET_SCHEDULES = """
INSERT INTO {schedules} AS s (name, expression, timezone, done_until)
SELECT i.name, i.expression, i.timezone, %(done_until)s
FROM unnest(%(names)s::text[], %(expressions)s::text[], %(timezones)s::text[])
    AS i(name, expression, timezone)
ON CONFLICT (name) DO UPDATE
SET expression = excluded.expression, timezone = excluded.timezone,
    done_until = excluded.done_until, updated_at = now()
WHERE (s.expression, s.timezone) IS DISTINCT FROM (excluded.expression, excluded.timezone)
"""

# Enqueues one tick, at most once however many workers run it at the same moment: the
# schedule row is locked and must still be behind the tick (a worker that waited for the
# lock re-reads the row, finds it moved on and does nothing), the job is inserted and the
# row moved forward in the same statement. The unique (task, scheduled_at) index is the
# last word: a second job for one tick cannot exist. With `enqueue` false (a tick too
# late to run) only the row moves. `done_until` is a time, whatever schedule moved it:
# workers whose apps declare the task with different schedules (a rolling deploy) each
# enqueue their own ticks past it, and a tick both declare gets one job. The row keeps
# the schedule of the worker that moved it last.
ENQUEUE_TICK = """
WITH due AS (
    SELECT name FROM {schedules}
    WHERE name = %(name)s AND done_until < %(tick)s
    FOR UPDATE
), enqueued AS (
    INSERT INTO {jobs} (queue, task, payload, priority, run_at, max_attempts, scheduled_at)
    SELECT %(queue)s, %(task)s, %(payload)s::jsonb, %(priority)s, %(tick)s,
           %(max_attempts)s, %(tick)s
    FROM due
    WHERE %(enqueue)s
    ON CONFLICT (task, scheduled_at) WHERE scheduled_at IS NOT NULL DO NOTHING
    RETURNING id
)
UPDATE {schedules} AS s
SET done_until = %(tick)s, expression = %(expression)s, timezone = %(timezone)s,
    last_tick = CASE WHEN %(enqueue)s THEN %(tick)s ELSE s.last_tick END,
    last_job_id = coalesce((SELECT id FROM enqueued), s.last_job_id),
    updated_at = now()
FROM due
WHERE s.name = due.name
RETURNING (SELECT id FROM enqueued)
"""


# --- testing: pgjobs.testing's clock ----------------------------------------------------
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


def control_channel(schema: str) -> str:
    """The channel of messages to workers (cancelled jobs), apart from the jobs channel
    so that no queue name can be mistaken for one."""
    return "pgjobs_control_" + hashlib.md5(schema.encode()).hexdigest()


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
        self.queues = sql.Identifier(schema, "queues")
        self.control_channel = control_channel(schema)
        self.jobs_table_name = self.jobs.as_string()

    def _compose(self, template: str, **parts: sql.Composable) -> sql.SQL:
        """`template` with its identifiers filled in, rendered to text once.

        psycopg renders a `Composed` again at every execute (a tenth of the client's CPU
        in a single-job enqueue); a plain `SQL` is only encoded. Identifiers are quoted
        the same in every client encoding, so the text serves every connection.
        """
        composed = sql.SQL(template).format(jobs=self.jobs, queues=self.queues, **parts)
        return sql.SQL(composed.as_string())

    def _with_held(self, template: str) -> sql.SQL:
        return self._compose(template, held=self._compose(HELD_BY_WORKER))

    def _with_job_columns(self, template: str) -> sql.SQL:
        return self._compose(template, job_columns=sql.SQL(JOB_COLUMNS.strip()))

    def enqueue(self, *, unique: bool) -> sql.SQL:
        return self._enqueue_forms[ENQUEUE, unique]

    def enqueue_one(self, *, unique: bool) -> sql.SQL:
        return self._enqueue_forms[ENQUEUE_ONE, unique]

    def enqueue_staged(self, *, unique: bool) -> sql.SQL:
        return self._enqueue_forms[ENQUEUE_STAGED, unique]

    @cached_property
    def _enqueue_forms(self) -> dict[tuple[str, bool], sql.SQL]:
        """Each INSERT of a job, with and without SKIP_HELD_UNIQUE_KEYS."""
        clauses = {True: sql.SQL(SKIP_HELD_UNIQUE_KEYS), False: sql.SQL("")}
        return {
            (template, unique): self._compose(template, on_conflict=clause, staging=self.staging)
            for template in (ENQUEUE, ENQUEUE_ONE, ENQUEUE_STAGED)
            for unique, clause in clauses.items()
        }

    @cached_property
    def reserve_job_ids(self) -> sql.SQL:
        function = sql.Identifier(self.schema, "reserve_job_ids")
        return self._compose(RESERVE_JOB_IDS, reserve_job_ids=function)

    @cached_property
    def copy_jobs(self) -> sql.SQL:
        return self._compose(COPY_JOBS)

    @cached_property
    def staging(self) -> sql.Identifier:
        return sql.Identifier("pg_temp", STAGING_TABLE)

    @cached_property
    def create_staging(self) -> sql.SQL:
        return self._compose(CREATE_STAGING, staging=self.staging)

    @cached_property
    def copy_to_staging(self) -> sql.SQL:
        return self._compose(COPY_TO_STAGING, staging=self.staging)

    @cached_property
    def drop_staging(self) -> sql.SQL:
        return self._compose(DROP_STAGING, staging=self.staging)

    @cached_property
    def unique_key_holders(self) -> sql.SQL:
        return self._compose(UNIQUE_KEY_HOLDERS)

    def claim(self, *, any_queue: bool, async_commit: bool) -> sql.SQL:
        """The claim from every queue or from one, committing durably or not."""
        return self._claim_forms[any_queue, async_commit]

    @cached_property
    def _claim_forms(self) -> dict[tuple[bool, bool], sql.SQL]:
        filters = {True: CLAIM_ANY_QUEUE_FILTER, False: CLAIM_QUEUE_FILTER}
        commits = {True: (ASYNC_CLAIM_COMMIT, ASYNC_CLAIM_CONDITION), False: ("", "")}
        return {
            (any_queue, async_commit): self._compose(
                CLAIM,
                queue_filter=self._compose(filters[any_queue]),
                async_commit=sql.SQL(commits[async_commit][0]),
                async_condition=sql.SQL(commits[async_commit][1]),
            )
            for any_queue in filters
            for async_commit in commits
        }

    def _writing_outcomes(self, template: str, outcomes: str) -> sql.SQL:
        held = self._compose(HELD_OUTCOMES, outcomes=sql.SQL(outcomes))
        return self._compose(template, held_outcomes=held)

    @cached_property
    def record_outcomes(self) -> sql.SQL:
        return self._writing_outcomes(RECORD_OUTCOMES, OUTCOMES)

    @cached_property
    def complete_jobs(self) -> sql.SQL:
        return self._writing_outcomes(COMPLETE_JOBS, ATTEMPTS)

    @cached_property
    def ready_jobs(self) -> sql.SQL:
        return self._with_workers(READY_JOBS)

    @cached_property
    def ready_job_rows(self) -> sql.SQL:
        return self._compose(READY_JOB_ROWS)

    @cached_property
    def heartbeat(self) -> sql.SQL:
        return self._with_held(HEARTBEAT)

    @cached_property
    def rescue(self) -> sql.SQL:
        return self._with_workers(RESCUE)

    @cached_property
    def listen(self) -> sql.Composed:
        return sql.SQL("LISTEN {}; LISTEN {}").format(
            sql.Identifier(self.channel), sql.Identifier(self.control_channel)
        )

    @cached_property
    def notify(self) -> sql.SQL:
        return self._compose(NOTIFY)

    @cached_property
    def schema_state(self) -> sql.SQL:
        return self._compose(SCHEMA_STATE)

    @cached_property
    def schema_revision(self) -> sql.SQL:
        return self._compose(SCHEMA_REVISION, alembic_version=self.version_table)

    @cached_property
    def version_table(self) -> sql.Identifier:
        """Alembic's version table, in the schema (migrations/env.py puts it there)."""
        return sql.Identifier(self.schema, "alembic_version")

    @cached_property
    def queue_stats(self) -> sql.SQL:
        return self._compose(QUEUE_STATS)

    @cached_property
    def list_jobs(self) -> sql.SQL:
        return self._with_job_columns(LIST_JOBS)

    @cached_property
    def get_job(self) -> sql.SQL:
        return self._with_job_columns(GET_JOB)

    @cached_property
    def lock_jobs_for_change(self) -> sql.SQL:
        return self._compose(LOCK_JOBS_FOR_CHANGE)

    @cached_property
    def retry_jobs(self) -> sql.SQL:
        return self._compose(RETRY_JOBS)

    @cached_property
    def cancel_jobs(self) -> sql.SQL:
        return self._compose(CANCEL_JOBS)

    @cached_property
    def prune_finished(self) -> sql.SQL:
        return self._compose(PRUNE_FINISHED)

    @cached_property
    def delete_queue_jobs(self) -> sql.SQL:
        return self._compose(DELETE_QUEUE_JOBS)

    # --- queue control ---------------------------------------------------------------

    @cached_property
    def pause_queue(self) -> sql.SQL:
        return self._compose(PAUSE_QUEUE)

    @cached_property
    def resume_queue(self) -> sql.SQL:
        return self._compose(RESUME_QUEUE)

    @cached_property
    def set_queue_limit(self) -> sql.SQL:
        return self._compose(SET_QUEUE_LIMIT)

    @cached_property
    def queue_limits(self) -> sql.SQL:
        return self._compose(QUEUE_LIMITS)

    @cached_property
    def count_waiting(self) -> sql.SQL:
        return self._compose(COUNT_WAITING)

    @cached_property
    def queue_overview(self) -> sql.SQL:
        return self._compose(QUEUE_OVERVIEW, queue_stats=self.queue_stats)

    @cached_property
    def count_matching(self) -> sql.SQL:
        return self._compose(COUNT_MATCHING, matching=sql.SQL(MATCHING_JOBS.strip()))

    @cached_property
    def lock_matching(self) -> sql.SQL:
        return self._compose(LOCK_MATCHING, matching=sql.SQL(MATCHING_JOBS.strip()))

    @cached_property
    def try_maintenance_lock(self) -> sql.SQL:
        return self._compose(TRY_MAINTENANCE_LOCK)

    @cached_property
    def release_maintenance_lock(self) -> sql.SQL:
        return self._compose(RELEASE_MAINTENANCE_LOCK)

    def _with_workers(self, template: str) -> sql.SQL:
        return self._compose(template, workers=sql.Identifier(self.schema, "workers"))

    @cached_property
    def register_worker(self) -> sql.SQL:
        return self._with_workers(REGISTER_WORKER)

    @cached_property
    def deregister_worker(self) -> sql.SQL:
        return self._with_workers(DEREGISTER_WORKER)

    @cached_property
    def forget_lost_workers(self) -> sql.SQL:
        return self._with_workers(FORGET_LOST_WORKERS)

    @cached_property
    def list_workers(self) -> sql.SQL:
        return self._with_workers(LIST_WORKERS)

    @cached_property
    def queue_depths(self) -> sql.SQL:
        return self._compose(QUEUE_DEPTHS)

    def _with_schedules(self, template: str) -> sql.SQL:
        return self._compose(template, schedules=sql.Identifier(self.schema, "schedules"))

    @cached_property
    def schedule_states(self) -> sql.SQL:
        return self._with_schedules(SCHEDULE_STATES)

    @cached_property
    def register_schedules(self) -> sql.SQL:
        return self._with_schedules(REGISTER_SCHEDULES)

    @cached_property
    def reset_schedules(self) -> sql.SQL:
        return self._with_schedules(RESET_SCHEDULES)

    @cached_property
    def enqueue_tick(self) -> sql.SQL:
        return self._with_schedules(ENQUEUE_TICK)

    # --- testing ------------------------------------------------------------------------

    @cached_property
    def make_due(self) -> sql.SQL:
        return self._compose(MAKE_DUE)
