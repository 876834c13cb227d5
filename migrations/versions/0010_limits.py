"""Concurrency and rate limits: `task_limits`, `queues.max_running`, the buckets a
running job holds, and the log of rate-limited starts.

`task_limits` holds each limited task's limits, written by the workers that declare
them (so every worker applies the same ones, and a deploy that changes a limit changes
them for the whole fleet). `queues.max_running` caps a queue's running jobs.

A claimed job of a limited task or queue records in `limit_buckets` the buckets it
holds while it runs: `c:<task>` or `c:<task>:<key value>` for a concurrency limit,
`q:<queue>` for a queue's. A bucket's use is the count of running jobs holding it,
read through a partial GIN index that only such jobs enter: a slot is given back by
whatever ends the attempt (an outcome, a cancel, the rescue of a lost worker's job),
and no counter can drift. `rate_starts` logs each start of a rate-limited job in its
bucket (`r:<task>` or `r:<task>:<key value>`), for the sliding window, with the moment
it leaves the window (`until`: `at` plus the limit's period), so that a bucket's use is
a count of rows with `until > now()`, whatever its period, and leaving rows are deleted.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from psycopg import sql
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


# The queue_summary view of migration 0005 with one more column, the queue's max_running
# (CREATE OR REPLACE VIEW may only add columns at the end). A migration is a snapshot:
# the view is written out whole, as it is from this revision on.
QUEUE_SUMMARY = """
CREATE OR REPLACE VIEW {s}.queue_summary AS
WITH waiting AS (
    SELECT queue,
           count(*) FILTER (WHERE run_at <= now()) AS available,
           count(*) FILTER (WHERE run_at > now()) AS scheduled,
           now() - min(run_at) FILTER (WHERE run_at <= now()) AS oldest_waiting
    FROM {s}.jobs
    WHERE state = 'available'
    GROUP BY queue
), running AS (
    SELECT queue, count(*) AS running
    FROM {s}.jobs
    WHERE state = 'running'
    GROUP BY queue
), finished AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'completed') AS completed_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled_last_hour
    FROM {s}.jobs
    WHERE state IN ('completed', 'failed', 'cancelled')
      AND finished_at > now() - interval '1 hour'
    GROUP BY queue
), names AS (
    SELECT queue FROM waiting
    UNION SELECT queue FROM running
    UNION SELECT queue FROM finished
    UNION SELECT name FROM {s}.queues
)
SELECT names.queue,
       coalesce(waiting.available, 0) AS available,
       coalesce(waiting.scheduled, 0) AS scheduled,
       coalesce(running.running, 0) AS running,
       coalesce(finished.completed_last_hour, 0) AS completed_last_hour,
       coalesce(finished.failed_last_hour, 0) AS failed_last_hour,
       coalesce(finished.cancelled_last_hour, 0) AS cancelled_last_hour,
       waiting.oldest_waiting,
       coalesce(queues.paused, false) AS paused,
       queues.max_waiting,
       queues.max_running
FROM names
LEFT JOIN waiting ON waiting.queue = names.queue
LEFT JOIN running ON running.queue = names.queue
LEFT JOIN finished ON finished.queue = names.queue
LEFT JOIN {s}.queues AS queues ON queues.name = names.queue
ORDER BY names.queue
"""


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "task_limits",
        sa.Column("task", sa.Text, primary_key=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("concurrency_key", sa.Text, nullable=True),
        sa.Column("rate_count", sa.Integer, nullable=True),
        sa.Column("rate_period", sa.Float, nullable=True),
        sa.Column("rate_key", sa.Text, nullable=True),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "concurrency IS NULL OR concurrency >= 1", name="task_limits_concurrency_check"
        ),
        sa.CheckConstraint(
            "(rate_count IS NULL) = (rate_period IS NULL)"
            " AND (rate_count IS NULL OR (rate_count >= 1 AND rate_period > 0))",
            name="task_limits_rate_check",
        ),
        schema=schema,
    )
    op.add_column("queues", sa.Column("max_running", sa.Integer, nullable=True), schema=schema)
    op.create_check_constraint(
        "queues_max_running_check",
        "queues",
        "max_running IS NULL OR max_running >= 1",
        schema=schema,
    )
    op.add_column("jobs", sa.Column("limit_buckets", ARRAY(sa.Text), nullable=True), schema=schema)
    op.create_index(
        "jobs_limit_buckets_idx",
        "jobs",
        ["limit_buckets"],
        schema=schema,
        postgresql_using="gin",
        postgresql_where=sa.text("state = 'running' AND limit_buckets IS NOT NULL"),
    )
    op.create_table(
        "rate_starts",
        sa.Column("bucket", sa.Text, nullable=False),
        sa.Column("at", tz, nullable=False),
        sa.Column("until", tz, nullable=False),
        schema=schema,
    )
    op.create_index("rate_starts_bucket_at_idx", "rate_starts", ["bucket", "at"], schema=schema)
    op.create_index("rate_starts_until_idx", "rate_starts", ["until"], schema=schema)
    op.execute(QUEUE_SUMMARY.format(s=sql.Identifier(schema).as_string()))


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    # The view without max_running, as migration 0005 made it (columns cannot be dropped
    # by CREATE OR REPLACE).
    op.execute(f"DROP VIEW {s}.queue_summary")
    op.execute(
        QUEUE_SUMMARY.replace("CREATE OR REPLACE VIEW", "CREATE VIEW")
        .replace(",\n       queues.max_running", "")
        .format(s=s)
    )
    op.drop_table("rate_starts", schema=schema)
    op.drop_index("jobs_limit_buckets_idx", table_name="jobs", schema=schema)
    op.drop_column("jobs", "limit_buckets", schema=schema)
    op.drop_constraint("queues_max_running_check", "queues", schema=schema)
    op.drop_column("queues", "max_running", schema=schema)
    op.drop_table("task_limits", schema=schema)
