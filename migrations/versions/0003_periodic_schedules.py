"""Periodic jobs: the schedule state, and each periodic job's scheduled time.

`schedules` has one row per periodic task that a worker has seen. `done_until` is the
newest scheduled time already dealt with (enqueued, skipped as too late, or passed before
the schedule existed): a worker enqueues a tick only by moving it forward, in the same
statement as the insert, so however many workers try, one wins. `jobs.scheduled_at` is
the tick a periodic job was enqueued for (NULL for other jobs); the unique index on
(task, scheduled_at) makes a second job for the same tick impossible, whatever happens
to the schedule row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "schedules",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("expression", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("done_until", tz, nullable=False),
        sa.Column("last_tick", tz, nullable=True),
        sa.Column("last_job_id", sa.BigInteger, nullable=True),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        schema=schema,
    )
    op.add_column("jobs", sa.Column("scheduled_at", tz, nullable=True), schema=schema)
    op.create_index(
        "jobs_scheduled_idx",
        "jobs",
        ["task", "scheduled_at"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("scheduled_at IS NOT NULL"),
    )


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_index("jobs_scheduled_idx", table_name="jobs", schema=schema)
    op.drop_column("jobs", "scheduled_at", schema=schema)
    op.drop_table("schedules", schema=schema)
