"""What each worker may lead besides the fleet's upkeep: `workers.duties`.

The maintenance leader (the longest-running live worker) rescues lost workers' jobs,
forgets long-lost workers and samples the queue gauges. Enqueueing periodic jobs and
deleting finished ones are duties a worker may decline (`--no-periodic`, no periodic
tasks, `--retention off`); each goes to the longest-running live worker that does it,
so that a leader which declines one never stops it for the whole fleet.

Rows of workers of an earlier version, which do both themselves, say both. A constant
default: adding the column rewrites nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    op.add_column(
        "workers",
        sa.Column(
            "duties",
            postgresql.ARRAY(sa.Text),
            nullable=False,
            server_default=sa.text("'{periodic,retention}'"),
        ),
        schema=schema,
    )


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_column("workers", "duties", schema=schema)
