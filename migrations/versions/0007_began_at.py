"""Tell a job a worker claimed from one whose attempt may have begun: `jobs.began_at` and
`workers.ready_jobs`.

A worker claims jobs ahead of its threads. A claimed job is `running` in the table with
its attempt counted, but it may wait in the worker's buffer for a moment before a thread
takes it. Should the worker die then, the rescue must give that attempt back with no
error entry, since the job never ran; only an attempt that began counts as lost. A
thread only starts a job the table knows as *ready*: the claim sets `began_at` for the
jobs that go to threads at once, and the worker lists the few more it readies just
before its threads need them, with those running or not yet written, in its row of
`workers` (`ready_jobs`, ranges of ids: a claim takes ids that mostly follow each other,
so it stays a few bytes; one small row update per batch instead of one per job).
A job in neither has certainly not run.

Nullable columns without a default: adding them rewrites nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    op.add_column("jobs", sa.Column("began_at", sa.DateTime(timezone=True)), schema=schema)
    op.add_column("workers", sa.Column("ready_jobs", postgresql.INT8MULTIRANGE), schema=schema)


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_column("workers", "ready_jobs", schema=schema)
    op.drop_column("jobs", "began_at", schema=schema)
