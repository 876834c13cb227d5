"""Create the jobs table, its indexes and the NOTIFY trigger.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from psycopg import sql
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES = "'available', 'running', 'completed', 'failed', 'cancelled'"


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    q = sql.Identifier(schema).as_string()
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("state", sa.Text, nullable=False, server_default="available"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="20"),
        sa.Column("run_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", tz, nullable=True),
        sa.Column("finished_at", tz, nullable=True),
        sa.Column("heartbeat_at", tz, nullable=True),
        sa.Column("errors", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("worker_id", sa.Text, nullable=True),
        sa.Column("unique_key", sa.Text, nullable=True),
        sa.CheckConstraint(f"state IN ({STATES})", name="jobs_state_check"),
        sa.CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_check"),
        schema=schema,
    )
    op.execute(
        f"ALTER TABLE {q}.jobs SET (fillfactor = 80,"
        " autovacuum_vacuum_scale_factor = 0.02,"
        " autovacuum_vacuum_insert_scale_factor = 0.05,"
        " autovacuum_analyze_scale_factor = 0.02)"
    )
    op.create_index(
        "jobs_fetch_idx",
        "jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("state = 'available'"),
    )
    op.create_index(
        "jobs_fetch_any_queue_idx",
        "jobs",
        [sa.text("priority DESC"), "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("state = 'available'"),
    )
    op.create_index(
        "jobs_unique_key_idx",
        "jobs",
        ["unique_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("unique_key IS NOT NULL AND state IN ('available', 'running')"),
    )
    op.create_index(
        "jobs_running_idx",
        "jobs",
        ["worker_id"],
        schema=schema,
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_index(
        "jobs_finished_idx",
        "jobs",
        ["finished_at"],
        schema=schema,
        postgresql_where=sa.text("state IN ('completed', 'failed', 'cancelled')"),
    )
    # One NOTIFY per queue per inserting statement, and PostgreSQL delivers it only on
    # commit (and folds duplicates within a transaction), so a bulk insert wakes each
    # listening worker once and a rolled-back enqueue wakes nobody. Delayed jobs send
    # nothing: the workers' poll finds them when their time comes.
    op.execute(
        f"""
        CREATE FUNCTION {q}.jobs_notify_available() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pgjobs_' || md5(TG_TABLE_SCHEMA), ready.queue)
            FROM (
                SELECT DISTINCT queue FROM new_jobs
                WHERE state = 'available' AND run_at <= now()
            ) AS ready;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER jobs_notify_available
        AFTER INSERT ON {q}.jobs
        REFERENCING NEW TABLE AS new_jobs
        FOR EACH STATEMENT EXECUTE FUNCTION {q}.jobs_notify_available()
        """
    )


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    q = sql.Identifier(schema).as_string()
    op.drop_table("jobs", schema=schema)
    op.execute(f"DROP FUNCTION IF EXISTS {q}.jobs_notify_available()")
