"""The statements that write attempts' outcomes, in batches: the worker's completer's
(through `ClaimStatements.record_outcomes`) and `pgjobs.testing`'s.

Every one of them is guarded: an outcome is written only while its job is still this
attempt, running, and this worker's, so a late writer never overwrites someone else's
attempt (a job cancelled or rescued meanwhile); it is dropped instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgjobs.data.sql import fill
from pgjobs.types import Outcome

# The outcomes in `{outcomes}` (a row source `o` with at least `id` and `attempt`) whose
# attempt this worker is still running, their rows locked in id order like
# data/claims.py's HELD_BY_WORKER: the sorted outcomes drive the loop. An outcome whose
# job was meanwhile cancelled or rescued (no longer this attempt, running and ours) is
# left out, so a late writer can never overwrite someone else's attempt; FOR UPDATE
# checks that again on the newest row after a wait, and the lock keeps it true until the
# write commits, so the UPDATE that follows only has to find the rows by id.
# Each outcome looks up its own row by id, whatever the plan: one UPDATE joining the
# outcomes, the locked rows and `jobs` got, as a prepared statement's generic plan, a
# scan of every running job once per outcome (tests/test_outcome_plans.py).
# RECORD_OUTCOMES, which sets each row from its own outcome, then joins them by id: the
# rarer path (failures, retries, snoozes), and at worst one scan of the table per batch.
HELD_OUTCOMES = """
    SELECT o.* FROM (SELECT * FROM {outcomes} ORDER BY id) AS o
    CROSS JOIN LATERAL (
        SELECT FROM {live} AS j
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
WITH o AS ({held_outcomes}), recorded AS (
    UPDATE {live} AS j
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
    RETURNING j.id, j.queue, j.state, j.workflow_id, o.delay
)
SELECT id, CASE WHEN state = 'available' AND delay IS NULL
                THEN pg_notify(%(channel)s, queue) END,
       {settle_finished}
FROM recorded
"""

# The common case of RECORD_OUTCOMES, on its own because it is most of the traffic:
# attempts that succeeded. No per-row CASE and no lock pass make it about twice as cheap
# for the database and for the worker that sends it. A completed job moves to the
# history in this statement: deleted from jobs_live, inserted into the day's partition
# of `jobs_history` (migration 0012); the partition is made beforehand (data/history.py's
# ENSURE_PARTITIONS, before the first completion of each day), since a statement routes
# its rows only to partitions that existed when it began.
#
# It runs as the schema's function `complete_jobs` (migration 0014 holds its text). The
# DELETE checks HELD_OUTCOMES' guard itself (this attempt, running, ours), on the newest
# version of a row changed meanwhile, as FOR UPDATE would; each outcome's attempt is
# looked up in one JSON object keyed by job id. It finds its rows by one array of ids,
# and the function's planner settings leave it only index scans keyed by id, so it locks
# them in id order, as heartbeats do, and the two cannot deadlock. As a plain statement
# it did so only while the planner chose such a scan: on a table of few live rows over
# many pages, as a steady load leaves it after an autovacuum, it chose a sequential (or
# bitmap) scan, which visits rows in the order of the table's pages, and a heartbeat and
# a completion deadlocked (tests/test_outcome_plans.py holds the plan to an index scan
# now). The lock pass cost a row lock, its WAL record and a second lookup a job
# (bench/PROFILE.md: 6.85 against 5.71 µs a row).
COMPLETE_JOBS = """
SELECT id FROM {complete_jobs}(%(ids)s::bigint[], %(attempts)s::jsonb, %(worker_id)s::text)
"""

# COMPLETE_JOBS for the jobs someone may wait for or depend on: those of tasks that store
# their result (written as the row moves, from one JSON object keyed by job id) and
# workflows' steps. It wakes `App.result` waiters and, through SETTLED_STEPS, releases the
# steps that waited for these in this very statement's transaction. Plain jobs never
# take it, so they pay for none of this.
COMPLETE_WATCHED = """
WITH recorded AS (
    SELECT * FROM {complete_jobs}(%(ids)s::bigint[], %(attempts)s::jsonb,
                                  %(worker_id)s::text, %(results)s::jsonb)
)
SELECT id, {settle_finished}
FROM recorded
"""

# Appended to the statements that finish jobs: the workflow steps among `recorded` that
# finished are settled (their dependents released or cancelled, migration 0009's
# settle_steps), and `App.result` waiters are woken, once per statement (an uncorrelated
# subquery runs once). For plain jobs it is an aggregate over no row and an empty call.
SETTLED_STEPS = """(
        SELECT {settle_steps}(array_agg(id), array_agg(state))
        FROM recorded
        WHERE workflow_id IS NOT NULL AND state IN ('completed', 'failed', 'cancelled')
    ) AS released,
    (SELECT pg_notify(%(results_channel)s, '')
     FROM recorded WHERE state IN ('completed', 'failed', 'cancelled') LIMIT 1) AS woken"""

RECORD_OUTCOMES = fill(
    RECORD_OUTCOMES,
    held_outcomes=fill(HELD_OUTCOMES, outcomes=OUTCOMES),
    settle_finished=SETTLED_STEPS,
)
COMPLETE_WATCHED = fill(COMPLETE_WATCHED, settle_finished=SETTLED_STEPS)


def attempts_by_id(outcomes: Sequence[Outcome]) -> str:
    """The attempts of `outcomes` as one JSON object text: `{"12":1,"13":3}`."""
    return "{" + ",".join([f'"{o.job_id}":{o.attempt}' for o in outcomes]) + "}"


def results_by_id(outcomes: Sequence[Outcome]) -> str:
    """The stored results of `outcomes` as one JSON object text: `{"12": <result>, ...}`
    (each result is JSON already; outcomes without one are left out)."""
    entries = [f'"{o.job_id}":{o.result_json}' for o in outcomes if o.result_json is not None]
    return "{" + ",".join(entries) + "}"
