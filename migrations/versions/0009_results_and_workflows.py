"""Results and workflows: `jobs.result`, the `blocked` state and the step graph.

A task declared with `store_result=True` leaves its return value in `result` (jsonb).

A workflow is a graph of jobs enqueued together (`workflows` holds its name). Each step
is a job with `workflow_id` and a `step` name unique in its workflow; `depends_on` lists
the ids it waits for (for reading and for results), `dependents` the ids that wait for
it (so that finishing a step finds its dependents by its own row, which the finishing
statement has locked), and `waiting_for` counts its dependencies not finished yet. A
step with `waiting_for > 0` is `blocked`; `run_if` says whether it needs its
dependencies `completed` (the default: a failed or cancelled one cancels it) or only
`finished`.

`settle_steps(ids, outcomes)` is called by every statement that finishes a workflow's
job, in that statement's transaction: it counts the finished jobs off their dependents'
`waiting_for`, makes the ones left with nothing to wait for `available` (and wakes the
workers), and cancels the ones a failed or cancelled dependency breaks, then passes
their cancellation on down the graph, level by level. A counter rather than a list of
the unfinished ids keeps a fan-in of 10,000 steps from rewriting a 10,000-element array
once per finishing step. Concurrent finishers of two dependencies of one step are
serialised by that step's row: each decrement is made on the newest row version
(READ COMMITTED re-reads a row updated meanwhile), so the last one sees zero.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import context, op
from psycopg import sql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD_STATES = "'available', 'running', 'completed', 'failed', 'cancelled'"
STATES = OLD_STATES + ", 'blocked'"

# Children are locked in id order before any is changed, so two finishers that share
# dependents cannot deadlock. The lock and the counts travel together in `locked`, and
# the UPDATE joins only it: an UPDATE that also filtered by `id IN (locked)` was planned,
# on PostgreSQL 18 whose estimate of `unnest` is one row, as a nested loop rescanning the
# locked rows once per edge (50 million comparisons, 8 s, to release 9,998 steps).
# A child already out of `blocked` (released, or cancelled by another dependency, or by
# hand) is left alone. The reason a child is cancelled names the first broken dependency
# (its step, its id and how it ended).
SETTLE_STEPS = """
CREATE FUNCTION {s}.settle_steps(finished bigint[], outcomes text[]) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $settle$
DECLARE
    released integer := 0;
    newly_released integer;
    cancelled bigint[];
    notified integer;
BEGIN
    WHILE coalesce(cardinality(finished), 0) > 0 LOOP
        WITH parents AS (
            SELECT p.id, p.step, f.outcome, p.dependents
            FROM unnest(finished, outcomes) AS f(id, outcome)
            JOIN {s}.jobs AS p ON p.id = f.id
            WHERE p.dependents IS NOT NULL
        ), edges AS (
            SELECT child, count(*)::integer AS done,
                   min(format('dependency %s (job %s) %s', step, id, outcome))
                       FILTER (WHERE outcome <> 'completed') AS broken_by
            FROM parents CROSS JOIN LATERAL unnest(parents.dependents) AS child
            GROUP BY child
        ), locked AS (
            SELECT j.id, e.done, e.broken_by
            FROM {s}.jobs AS j
            JOIN edges AS e ON e.child = j.id
            WHERE j.state = 'blocked'
            ORDER BY j.id
            FOR UPDATE OF j
        ), changed AS (
            UPDATE {s}.jobs AS j
            SET waiting_for = j.waiting_for - e.done,
                state = CASE
                    WHEN e.broken_by IS NOT NULL AND j.run_if = 'completed' THEN 'cancelled'
                    WHEN j.waiting_for - e.done <= 0 THEN 'available'
                    ELSE 'blocked' END,
                finished_at = CASE
                    WHEN e.broken_by IS NOT NULL AND j.run_if = 'completed' THEN now() END,
                errors = CASE
                    WHEN e.broken_by IS NOT NULL AND j.run_if = 'completed'
                    THEN j.errors || jsonb_build_array(jsonb_build_object(
                        'attempt', j.attempts, 'at', now(), 'worker', NULL,
                        'error', 'cancelled: ' || e.broken_by, 'traceback', NULL))
                    ELSE j.errors END
            FROM locked AS e
            WHERE j.id = e.id
            RETURNING j.id, j.state, j.queue
        )
        SELECT coalesce(array_agg(id) FILTER (WHERE state = 'cancelled'), '{{}}'),
               count(*) FILTER (WHERE state = 'available'),
               (SELECT count(pg_notify({jobs_channel}, queue))
                FROM (SELECT DISTINCT queue FROM changed WHERE state = 'available') AS r)
             + (SELECT count(pg_notify({results_channel}, ''))
                FROM (SELECT FROM changed WHERE state = 'cancelled' LIMIT 1) AS c)
        INTO cancelled, newly_released, notified
        FROM changed;
        released := released + newly_released;
        finished := cancelled;
        outcomes := array_fill('cancelled'::text, ARRAY[cardinality(cancelled)]);
    END LOOP;
    RETURN released;
END
$settle$
"""


def channel(prefix: str, schema: str) -> str:
    """A channel name as pgjobs.data.sql computes it (kept here: migrations stand alone)."""
    return sql.Literal(prefix + hashlib.md5(schema.encode()).hexdigest()).as_string()


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    op.create_table(
        "workflows",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=schema,
    )
    op.add_column("jobs", sa.Column("result", JSONB, nullable=True), schema=schema)
    op.add_column("jobs", sa.Column("workflow_id", sa.BigInteger, nullable=True), schema=schema)
    op.add_column("jobs", sa.Column("step", sa.Text, nullable=True), schema=schema)
    op.add_column("jobs", sa.Column("run_if", sa.Text, nullable=True), schema=schema)
    op.add_column(
        "jobs", sa.Column("depends_on", ARRAY(sa.BigInteger), nullable=True), schema=schema
    )
    op.add_column(
        "jobs", sa.Column("dependents", ARRAY(sa.BigInteger), nullable=True), schema=schema
    )
    op.add_column("jobs", sa.Column("waiting_for", sa.Integer, nullable=True), schema=schema)
    op.drop_constraint("jobs_state_check", "jobs", schema=schema)
    op.create_check_constraint("jobs_state_check", "jobs", f"state IN ({STATES})", schema=schema)
    op.create_check_constraint(
        "jobs_run_if_check", "jobs", "run_if IN ('completed', 'finished')", schema=schema
    )
    op.create_index(
        "jobs_workflow_step_idx",
        "jobs",
        ["workflow_id", "step"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    )
    op.execute(
        SETTLE_STEPS.format(
            s=s,
            jobs_channel=channel("pgjobs_", schema),
            results_channel=channel("pgjobs_results_", schema),
        )
    )


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    op.execute(f"DROP FUNCTION IF EXISTS {s}.settle_steps(bigint[], text[])")
    op.drop_index("jobs_workflow_step_idx", table_name="jobs", schema=schema)
    op.drop_constraint("jobs_run_if_check", "jobs", schema=schema)
    # Steps still waiting for their dependencies cannot wait without the step graph.
    op.execute(
        f"UPDATE {s}.jobs SET state = 'cancelled', finished_at = now() WHERE state = 'blocked'"
    )
    op.drop_constraint("jobs_state_check", "jobs", schema=schema)
    op.create_check_constraint(
        "jobs_state_check", "jobs", f"state IN ({OLD_STATES})", schema=schema
    )
    for column in ("waiting_for", "dependents", "depends_on", "run_if", "step", "workflow_id"):
        op.drop_column("jobs", column, schema=schema)
    op.drop_column("jobs", "result", schema=schema)
    op.drop_table("workflows", schema=schema)
