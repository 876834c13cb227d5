"""Tell a job a worker claimed from one whose attempt began: `jobs.began_at`.

A worker claims jobs ahead of its threads. A claimed job is `running` in the table with
its attempt counted, but it may wait in the worker's buffer for a moment before a thread
takes it. Should the worker die then, the rescue must give that attempt back with no
error entry, since the job never ran; only an attempt that began counts as lost. A
thread only starts a job whose `began_at` is set: the claim sets it for the jobs that
go to threads at once, and the worker sets it for a few more just before its threads
need them. A job whose `began_at` is NULL has certainly not run.

A nullable column without a default: adding it rewrites nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    op.add_column("jobs", sa.Column("began_at", sa.DateTime(timezone=True)), schema=schema)


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_column("jobs", "began_at", schema=schema)
