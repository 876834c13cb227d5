"""Index running jobs by id, not by worker.

The worker's batch statements (outcomes, heartbeats) look running jobs up by id. With
`jobs_running_idx` on `worker_id`, every running row of a worker shares one key, and
the planner, which believes few rows are running, scanned all of them for each batch
and joined them in a nested loop: 280 ms instead of 3 ms for 300 outcomes with 2,000
jobs running. Keyed by id, the same partial index serves those lookups and the
rescuer's scan of running jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_index("jobs_running_idx", table_name="jobs", schema=schema)
    op.create_index(
        "jobs_running_idx",
        "jobs",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("state = 'running'"),
    )


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    op.drop_index("jobs_running_idx", table_name="jobs", schema=schema)
    op.create_index(
        "jobs_running_idx",
        "jobs",
        ["worker_id"],
        schema=schema,
        postgresql_where=sa.text("state = 'running'"),
    )
