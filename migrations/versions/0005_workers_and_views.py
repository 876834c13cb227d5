"""Observability: the worker registry, and two views for plain SQL and dashboards.

- `workers`: one row per running worker, upserted at start and with every heartbeat,
  deleted on a clean exit. A row silent for its own `rescue_after` is a lost worker
  (its jobs are being rescued); the maintenance leader deletes it an hour later.
- `queue_summary`: per queue, the waiting, scheduled and running jobs, the jobs finished
  in the last hour by state, the oldest waiting age, and the queue's settings.
- `failing_tasks`: per task, the jobs that failed for good and the failed attempts that
  were retried in the last hour, with the last error.

Both views read only the partial indexes' rows (waiting, running, finished in the last
hour, and rows with errors through `jobs_errors_idx`), so they stay cheap however many
finished jobs the table keeps. `jobs_errors_idx` holds only jobs that failed an attempt:
jobs that never fail never touch it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from psycopg import sql
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUEUE_SUMMARY = """
CREATE VIEW {s}.queue_summary AS
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
       queues.max_waiting
FROM names
LEFT JOIN waiting ON waiting.queue = names.queue
LEFT JOIN running ON running.queue = names.queue
LEFT JOIN finished ON finished.queue = names.queue
LEFT JOIN {s}.queues AS queues ON queues.name = names.queue
ORDER BY names.queue
"""

# A job's errors all happened before it finished, so only unfinished jobs and jobs that
# finished in the last hour can hold an error of the last hour. The last entry of a
# failed job is the attempt that failed it for good; every other entry was retried.
FAILING_TASKS = """
CREATE VIEW {s}.failing_tasks AS
WITH entries AS (
    SELECT j.task,
           e.entry ->> 'error' AS error,
           (e.entry ->> 'at')::timestamptz AS at,
           j.state = 'failed' AND e.position = jsonb_array_length(j.errors) AS final
    FROM {s}.jobs AS j
    CROSS JOIN LATERAL jsonb_array_elements(j.errors) WITH ORDINALITY AS e(entry, position)
    WHERE j.errors <> '[]'::jsonb
      AND (j.finished_at IS NULL OR j.finished_at > now() - interval '1 hour')
)
SELECT task,
       count(*) FILTER (WHERE final) AS failed_last_hour,
       count(*) FILTER (WHERE NOT final) AS retried_last_hour,
       max(at) AS last_error_at,
       (array_agg(error ORDER BY at DESC))[1] AS last_error
FROM entries
WHERE at > now() - interval '1 hour'
GROUP BY task
ORDER BY count(*) DESC, task
"""


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", ARRAY(sa.Text), nullable=True),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("rescue_after", sa.Float, nullable=False),
        sa.Column("started_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("last_heartbeat_at", tz, nullable=False, server_default=sa.func.now()),
        schema=schema,
    )
    op.create_index(
        "jobs_errors_idx",
        "jobs",
        ["finished_at"],
        schema=schema,
        postgresql_where=sa.text("errors <> '[]'::jsonb"),
    )
    op.execute(QUEUE_SUMMARY.format(s=s))
    op.execute(FAILING_TASKS.format(s=s))


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    op.execute(f"DROP VIEW IF EXISTS {s}.failing_tasks")
    op.execute(f"DROP VIEW IF EXISTS {s}.queue_summary")
    op.drop_index("jobs_errors_idx", table_name="jobs", schema=schema)
    op.drop_table("workers", schema=schema)
