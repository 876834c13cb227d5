"""Bulk enqueue by COPY straight into `jobs`: a function that reserves ids in order.

A large `enqueue_many` of plain jobs (no unique key, no delay, no run_at of their own)
streams its rows into `jobs` with one COPY while later rows are still being validated,
so the producer's Python and the server's inserting overlap. COPY returns nothing, so
the producer first takes the ids it will write, in ascending order, from the jobs'
identity sequence.

Calling `nextval` needs a grant on the sequence that a producer role does not have (an
identity column needs none for INSERT). `reserve_job_ids` runs with its owner's rights
(`SECURITY DEFINER`, the role that migrated) and does nothing but draw `count` values,
so a producer still needs only INSERT on `jobs`. Its search_path is fixed, as every
security-definer function's must be.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import context, op
from psycopg import sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The sequence is looked up once per call, by the table's name (so the statement needs no
# database to be written, as `pgjobs migrate --sql` does). `ORDER BY n` sorts the values
# by the position that drew them: ascending, so the batch's ids follow its order, as the
# rows inserted one by one would.
RESERVE_JOB_IDS = """
CREATE FUNCTION {s}.reserve_job_ids(count integer) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $reserve$
DECLARE
    ids regclass := pg_get_serial_sequence({table}, 'id');
BEGIN
    RETURN (
        SELECT coalesce(array_agg(nextval(ids) ORDER BY n), '{{}}')
        FROM generate_series(1, count) AS n
    );
END
$reserve$
"""


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    table = sql.Literal(sql.Identifier(schema, "jobs").as_string()).as_string()
    op.execute(RESERVE_JOB_IDS.format(s=s, table=table))


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    op.execute(f"DROP FUNCTION IF EXISTS {s}.reserve_job_ids(integer)")
