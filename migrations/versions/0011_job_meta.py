"""Metadata that travels with a job: `jobs.meta`.

Enqueue middleware (pgjobs.hooks) and the `meta=` enqueue option put what belongs to
the job but is not its arguments here: W3C trace context for OpenTelemetry, a tenant
id, the request id that enqueued it. Workers read it back with the claim and hand it to
middleware and hooks; `pgjobs show` prints it.

A nullable column without a default: adding it rewrites nothing, and a job without
metadata (the common case) stores nothing for it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    op.add_column("jobs", sa.Column("meta", postgresql.JSONB), schema=schema)


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_column("jobs", "meta", schema=schema)
