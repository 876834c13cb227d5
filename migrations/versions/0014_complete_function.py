"""The completion as a function, `complete_jobs`, so that it locks its rows in id order.

A successful attempt's row moves to the history in one statement: deleted from
`jobs_live` by an array of ids, under the guard that the attempt is still this worker's,
and inserted into `jobs_history`. The heartbeat locks the same rows in id order
(data/claims.py, HEARTBEAT), so the two cannot deadlock only while the completion locks
them in id order too, which it does when its plan is an index scan keyed by id
(jobs_pkey or jobs_running_idx). Under a steady load the planner, seeing few live rows,
chose otherwise: a bitmap heap scan (or a sequential scan) visits the rows in the order
of the table's pages, and a five-minute run at 2,000 jobs/s logged a deadlock between a
heartbeat and a completion (bench/sustained.py, 2026-12-07).

As for `claim_jobs` (migration 0013), only a function's `SET` clauses give one statement
planner settings of its own, on any connection and behind a transaction pooler: with
bitmap and sequential scans off, the only plans left are index scans of jobs_pkey and of
jobs_running_idx, both in id order. The plan is made once per session (a generic plan),
which saves the planning that cost about as much as running a completion of a few jobs.

`done_results` (job id → result, JSON) is given for the jobs whose result is stored or
whose workflow waits on them (data/outcome_sql.py, COMPLETE_WATCHED): their result is
written as the row moves. The rows moved come back, with their state and workflow, for
the caller to settle workflow steps and wake `App.result` waiters.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import context, op
from psycopg import sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COMPLETE_JOBS = """
CREATE FUNCTION {s}.complete_jobs(
    done_ids bigint[], done_attempts jsonb, done_worker text, done_results jsonb DEFAULT NULL
) RETURNS TABLE (id bigint, state text, workflow_id bigint)
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        WITH done AS (
            DELETE FROM {s}.jobs_live AS j
            WHERE j.id = ANY(done_ids)
              AND j.state = 'running' AND j.worker_id = done_worker
              AND j.attempts = (done_attempts ->> j.id::text)::int
            RETURNING j.*
        )
        INSERT INTO {s}.jobs_history AS h (
            id, queue, task, payload, state, priority, attempts, max_attempts, run_at,
            created_at, started_at, finished_at, heartbeat_at, errors, worker_id,
            unique_key, scheduled_at, began_at, result, workflow_id, step, run_if,
            depends_on, dependents, waiting_for, limit_buckets, meta
        )
        SELECT d.id, d.queue, d.task, d.payload, 'completed', d.priority, d.attempts,
               d.max_attempts, d.run_at, d.created_at, d.started_at, now(), NULL,
               d.errors, d.worker_id, d.unique_key, d.scheduled_at, d.began_at,
               CASE WHEN done_results IS NULL THEN d.result
                    ELSE done_results -> d.id::text END,
               d.workflow_id, d.step, d.run_if, d.depends_on, d.dependents,
               d.waiting_for, d.limit_buckets, d.meta
        FROM done AS d
        RETURNING h.id, h.state, h.workflow_id;
END
$$;
"""


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    op.execute(COMPLETE_JOBS.replace("{s}", s))


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    op.execute(f"DROP FUNCTION {s}.complete_jobs(bigint[], jsonb, text, jsonb)")
