"""History apart from the hot rows: `jobs_live`, `jobs_history` and the `jobs` view.

A queue's table turns over its waiting and running rows all day, while finished jobs
pile up behind them: with a month of history in the same table, every vacuum of the hot
rows walks the history too, and the indexes the claim reads share pages and statistics
with it. From this revision on:

- `jobs_live` (the former `jobs` table, renamed: nothing is copied) holds the waiting,
  blocked and running jobs. Claims, enqueues, heartbeats and outcomes touch only it.
- `jobs_history` holds finished jobs (completed, failed, cancelled), partitioned by
  RANGE (state, finished_at): one partition per final state and UTC day, named
  `jobs_history_<state>_<YYYYMMDD>`, made by `jobs_history_partition(state, at)` (ahead
  of time by the workers, and on demand). Retention detaches and drops whole partitions:
  no row is deleted, no dead tuple is left.
- `jobs` is a view, `jobs_live UNION ALL jobs_history`: every query on `jobs` answers
  for waiting and finished jobs alike, and INSTEAD OF triggers keep it writable for
  hand-written SQL (an INSERT goes to `jobs_live`; an UPDATE or DELETE finds the row
  where it is). pgjobs itself writes the two tables directly.

A job moves when it finishes, in the transaction that finishes it: the worker's
completion deletes it from `jobs_live` and inserts it into `jobs_history` in one
statement, and any other UPDATE that gives a row of `jobs_live` a final state (a
failure, a cancel, a rescue, a step cancelled by its dependency) has it moved by the
row trigger `jobs_move_finished`. A statement waiting for the row's lock meanwhile (a
heartbeat, a cancel) finds it deleted and passes over it, as it would a row another
statement changed out of its WHERE clause: no serialization error, unlike declarative
partitioning by state, whose row movement fails such waiters.

A finished row may still sit in `jobs_live` for a while (the history of a table migrated
from before this revision, a step inserted already cancelled, a retried job given up
again by hand): everything reads through `jobs` or looks in both, and
`jobs_move_finished_batch(n)` moves such rows into `jobs_history` n at a time, each call
one short transaction. `pgjobs migrate` calls it until none is left, and the retention
duty of the workers does as well, so an existing table's history moves without a long
lock and without a long transaction.

Uniqueness now holds among the live rows: a unique key among unfinished jobs (as
before), a workflow step's name among its workflow's unfinished steps (finished ones are
checked by the code that adds steps), and a periodic tick's job among unfinished jobs
(the schedule's row lock enqueues each tick once; the index is the last word only while
the tick's job waits or runs).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import context, op
from psycopg import sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

FINISHED = "'completed', 'failed', 'cancelled'"

# The columns of jobs as of revision 0011, in table order: the view and its triggers are
# written for exactly these (a migration is a snapshot; one that adds a column to the
# jobs tables redefines the view and the triggers).
COLUMNS = (  # noqa: SIM905 - a few lines to read, not one name a line
    "id queue task payload state priority attempts max_attempts run_at created_at "
    "started_at finished_at heartbeat_at errors worker_id unique_key scheduled_at began_at "
    "result workflow_id step run_if depends_on dependents waiting_for limit_buckets meta"
).split()


def _history_ddl(s: str, schema: str) -> str:
    # The history partitions share their parent's shape; their storage suits rows that
    # are inserted once and dropped with their partition: packed pages, and autovacuum
    # only to freeze and analyze them.
    literal = sql.Literal(schema).as_string()
    return f"""
CREATE TABLE {s}.jobs_history (LIKE {s}.jobs_live INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (state, finished_at);
ALTER TABLE {s}.jobs_history DROP CONSTRAINT jobs_state_check;
ALTER TABLE {s}.jobs_history ADD CONSTRAINT jobs_history_state_check
    CHECK (state IN ({FINISHED}));
ALTER TABLE {s}.jobs_history ALTER COLUMN finished_at SET NOT NULL;
CREATE INDEX jobs_history_id_idx ON {s}.jobs_history (id);
CREATE INDEX jobs_history_finished_idx ON {s}.jobs_history (finished_at);
CREATE INDEX jobs_history_workflow_step_idx ON {s}.jobs_history (workflow_id, step)
    WHERE workflow_id IS NOT NULL;

-- The partition of one final state and UTC day, made when missing. Made as a table and
-- then attached, which locks the parent only against other DDL (SHARE UPDATE EXCLUSIVE):
-- claims, enqueues and completions go on meanwhile. Two sessions making the same one
-- wait for each other on an advisory lock, and the second finds it made. It runs with
-- its owner's rights (the schema's owner), so a worker or producer role that may only
-- read and write rows can have a day's partition made.
CREATE FUNCTION {s}.jobs_history_partition(final_state text, at timestamptz)
RETURNS regclass LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $partition$
DECLARE
    day date := (at AT TIME ZONE 'UTC')::date;
    name text := format('jobs_history_%s_%s', final_state, to_char(day, 'YYYYMMDD'));
    qualified text := format('%I.%I', {literal}, name);
    made regclass := to_regclass(qualified);
BEGIN
    IF made IS NOT NULL THEN
        RETURN made;
    END IF;
    IF final_state NOT IN ({FINISHED}) THEN
        RAISE EXCEPTION 'jobs_history has no partitions for state %', final_state
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(qualified));
    -- Read from the catalog by a query of its own, whose snapshot sees a partition that
    -- the session we waited for made (to_regclass may answer from an older one).
    SELECT c.oid INTO made FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relname = name AND n.nspname = {literal};
    IF made IS NOT NULL THEN
        RETURN made;
    END IF;
    EXECUTE format(
        'CREATE TABLE %s (LIKE %I.jobs_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        ' WITH (fillfactor = 100, autovacuum_vacuum_insert_scale_factor = 0.2)',
        qualified, {literal});
    EXECUTE format(
        'ALTER TABLE %I.jobs_history ATTACH PARTITION %s'
        ' FOR VALUES FROM (%L, %L) TO (%L, %L)',
        {literal}, qualified,
        final_state, day::timestamp AT TIME ZONE 'UTC',
        final_state, (day + 1)::timestamp AT TIME ZONE 'UTC');
    RETURN qualified::regclass;
END
$partition$;

-- Retention's drop of one partition for a role that does not own the history (the
-- owner detaches CONCURRENTLY instead, which no function may do): detached and dropped
-- with the owner's rights. Detaching locks the history, not jobs_live, for a moment
-- (claims and enqueues go on); a lock not granted within lock_timeout leaves the
-- partition for the next pass rather than hold completions in line.
CREATE FUNCTION {s}.jobs_history_drop(partition_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $drop$
BEGIN
    IF partition_name !~ '^jobs_history_(completed|failed|cancelled)_[0-9]{{8}}$'
       OR to_date(right(partition_name, 8), 'YYYYMMDD')
          >= (now() AT TIME ZONE 'UTC')::date THEN
        RAISE EXCEPTION '% is not a partition of a past day of the history', partition_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('ALTER TABLE %I.jobs_history DETACH PARTITION %I.%I',
                   {literal}, {literal}, partition_name);
    EXECUTE format('DROP TABLE %I.%I', {literal}, partition_name);
END
$drop$;
-- Only roles granted it may drop history (the worker role: docs/guarantees.md).
REVOKE EXECUTE ON FUNCTION {s}.jobs_history_drop(text) FROM PUBLIC;
"""


def _move_ddl(s: str) -> str:
    return f"""
-- Any UPDATE that gives a live row a final state moves it to the history, at the end of
-- that statement and in its transaction (the worker's completions move their rows
-- themselves, without this per-row call).
CREATE FUNCTION {s}.jobs_move_finished() RETURNS trigger
LANGUAGE plpgsql AS $move$
BEGIN
    NEW.finished_at := coalesce(NEW.finished_at, now());
    PERFORM {s}.jobs_history_partition(NEW.state, NEW.finished_at);
    DELETE FROM {s}.jobs_live WHERE id = NEW.id;
    INSERT INTO {s}.jobs_history VALUES (NEW.*);
    RETURN NULL;
END
$move$;
CREATE TRIGGER jobs_move_finished
AFTER UPDATE ON {s}.jobs_live
FOR EACH ROW WHEN (NEW.state IN ({FINISHED}))
EXECUTE FUNCTION {s}.jobs_move_finished();

-- Finished rows left in jobs_live (a table's history from before revision 0012, rows
-- inserted finished): `batch_size` of them moved per call, oldest first, each call its
-- own short transaction when run in autocommit. Returns how many moved.
CREATE FUNCTION {s}.jobs_move_finished_batch(batch_size integer) RETURNS integer
LANGUAGE plpgsql AS $batch$
DECLARE
    ids bigint[];
    moved integer;
BEGIN
    ids := ARRAY(
        SELECT id FROM {s}.jobs_live
        WHERE state IN ({FINISHED})
        ORDER BY finished_at NULLS FIRST
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED);
    UPDATE {s}.jobs_live SET finished_at = now()
    WHERE id = ANY(ids) AND finished_at IS NULL;
    PERFORM {s}.jobs_history_partition(d.state, d.day)
    FROM (SELECT DISTINCT state, date_trunc('day', finished_at, 'UTC') AS day
          FROM {s}.jobs_live WHERE id = ANY(ids)) AS d;
    WITH gone AS (
        DELETE FROM {s}.jobs_live WHERE id = ANY(ids) RETURNING *
    )
    INSERT INTO {s}.jobs_history SELECT * FROM gone;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$batch$;
"""


def _view_ddl(s: str) -> str:
    columns = ", ".join(COLUMNS)
    new_values = ", ".join(f"NEW.{c}" for c in COLUMNS)
    return f"""
CREATE VIEW {s}.jobs AS
SELECT * FROM {s}.jobs_live
UNION ALL
SELECT * FROM {s}.jobs_history;

-- Hand-written SQL may write the view: an INSERT goes to jobs_live (a finished row stays
-- there until moved), an UPDATE changes the row where it is, moving it when it becomes
-- finished or unfinished, a DELETE removes it wherever it is.
CREATE FUNCTION {s}.jobs_write() RETURNS trigger
LANGUAGE plpgsql AS $write$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {s}.jobs_live VALUES (NEW.*);
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' THEN
        DELETE FROM {s}.jobs_live WHERE id = OLD.id;
        IF NOT FOUND THEN
            DELETE FROM {s}.jobs_history WHERE id = OLD.id;
        END IF;
        RETURN OLD;
    END IF;
    -- A claim through the view would lock nothing (PostgreSQL does not lock rows read
    -- through a UNION ALL view), so two claimers could take one job: refuse it. Only a
    -- worker from before revision 0012 claims so.
    IF OLD.state = 'available' AND NEW.state = 'running' THEN
        RAISE EXCEPTION 'job % was claimed through the jobs view, which cannot lock it: '
            'this worker predates pgjobs migration 0012; upgrade it', OLD.id
            USING ERRCODE = 'feature_not_supported';
    END IF;
    UPDATE {s}.jobs_live SET ({columns}) = ({new_values}) WHERE id = OLD.id;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    IF NEW.state IN ({FINISHED}) THEN
        NEW.finished_at := coalesce(NEW.finished_at, now());
        PERFORM {s}.jobs_history_partition(NEW.state, NEW.finished_at);
        UPDATE {s}.jobs_history SET ({columns}) = ({new_values}) WHERE id = OLD.id;
    ELSE
        DELETE FROM {s}.jobs_history WHERE id = OLD.id;
        INSERT INTO {s}.jobs_live VALUES (NEW.*);
    END IF;
    RETURN NEW;
END
$write$;
CREATE TRIGGER jobs_write INSTEAD OF INSERT OR UPDATE OR DELETE ON {s}.jobs
FOR EACH ROW EXECUTE FUNCTION {s}.jobs_write();
"""


def _view_defaults(s: str, schema_name: str) -> str:
    # An INSERT into the view takes the table's defaults; the id's comes from the live
    # table's identity sequence, looked up once here.
    defaults = {
        "queue": "'default'",
        "payload": "'{}'::jsonb",
        "state": "'available'",
        "priority": "0",
        "attempts": "0",
        "max_attempts": "20",
        "run_at": "now()",
        "created_at": "now()",
        "errors": "'[]'::jsonb",
    }
    statements = [
        f"ALTER VIEW {s}.jobs ALTER COLUMN {column} SET DEFAULT {value};"
        for column, value in defaults.items()
    ]
    schema = sql.Literal(schema_name).as_string()
    live = sql.Literal(f"{s}.jobs_live").as_string()
    statements.append(
        f"""DO $defaults$ BEGIN
    EXECUTE format('ALTER VIEW %I.jobs ALTER COLUMN id SET DEFAULT nextval(%L)',
                   {schema}, pg_get_serial_sequence({live}, 'id'));
END $defaults$;"""
    )
    return "\n".join(statements)


def _migration(revision_id: str) -> object:
    """An earlier migration's module, for the statement texts it defined."""
    script = context.script.get_revision(revision_id)
    assert script is not None and script.module is not None
    return script.module


def _rebuilt_dependents(s: str, schema: str) -> list[str]:
    """The views and settle_steps of earlier revisions, now over the `jobs` view (their
    text names `jobs`; renaming the table had pointed them at `jobs_live`). settle_steps
    locks and changes blocked steps, which are live, in `jobs_live`."""
    views = _migration("0010").QUEUE_SUMMARY.format(s=s)  # type: ignore[attr-defined]
    failing = _migration("0005").FAILING_TASKS.format(s=s)  # type: ignore[attr-defined]
    failing = failing.replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
    settle_module = _migration("0009")
    settle = settle_module.SETTLE_STEPS.format(  # type: ignore[attr-defined]
        s=s,
        jobs_channel=settle_module.channel("pgjobs_", schema),  # type: ignore[attr-defined]
        results_channel=settle_module.channel("pgjobs_results_", schema),  # type: ignore[attr-defined]
    )
    settle = settle.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    settle = settle.replace(f"FROM {s}.jobs AS j\n", f"FROM {s}.jobs_live AS j\n")
    settle = settle.replace(f"UPDATE {s}.jobs AS j", f"UPDATE {s}.jobs_live AS j")
    return [views, failing, settle, _reserve_job_ids(s, schema, "jobs_live")]


def _reserve_job_ids(s: str, schema: str, table: str) -> str:
    """Migration 0006's reserve_job_ids, drawing from `table`'s id sequence."""
    text = _migration("0006").RESERVE_JOB_IDS  # type: ignore[attr-defined]
    literal = sql.Literal(sql.Identifier(schema, table).as_string()).as_string()
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").format(s=s, table=literal)


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    op.execute(f"ALTER TABLE {s}.jobs RENAME TO jobs_live")
    # Finished rows no longer collect here: the live table's storage stays as it was.
    op.execute(_history_ddl(s, schema))
    op.execute(_move_ddl(s))
    op.execute(_view_ddl(s))
    op.execute(_view_defaults(s, schema))
    for statement in _rebuilt_dependents(s, schema):
        op.execute(statement)


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    s = sql.Identifier(schema).as_string()
    # The history goes back into the one table (a long statement on a large history).
    op.execute(f"INSERT INTO {s}.jobs_live SELECT * FROM {s}.jobs_history")
    op.execute(f"DROP VIEW {s}.jobs CASCADE")
    op.execute(f"DROP FUNCTION {s}.jobs_write()")
    op.execute(f"DROP TABLE {s}.jobs_history CASCADE")
    op.execute(f"DROP TRIGGER jobs_move_finished ON {s}.jobs_live")
    op.execute(f"DROP FUNCTION {s}.jobs_move_finished()")
    op.execute(f"DROP FUNCTION {s}.jobs_move_finished_batch(integer)")
    op.execute(f"DROP FUNCTION {s}.jobs_history_partition(text, timestamptz)")
    op.execute(f"DROP FUNCTION {s}.jobs_history_drop(text)")
    op.execute(f"ALTER TABLE {s}.jobs_live RENAME TO jobs")
    # The views dropped with the view `jobs` come back over the table, as 0010 made them.
    views = _migration("0010").QUEUE_SUMMARY.format(s=s)  # type: ignore[attr-defined]
    op.execute(views)
    failing = _migration("0005").FAILING_TASKS.format(s=s)  # type: ignore[attr-defined]
    op.execute(failing)
    settle_module = _migration("0009")
    settle = settle_module.SETTLE_STEPS.format(  # type: ignore[attr-defined]
        s=s,
        jobs_channel=settle_module.channel("pgjobs_", schema),  # type: ignore[attr-defined]
        results_channel=settle_module.channel("pgjobs_results_", schema),  # type: ignore[attr-defined]
    )
    op.execute(settle.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.execute(_reserve_job_ids(s, schema, "jobs"))
