"""Reading and shaping rows of the test schema.

- `job`, `jobs`, `job_ids`, `wait_for_job`: the jobs table as dicts.
- `make_job`, `update_job`, `ago` and the state factories (`failed()`, `completed()`,
  `cancelled()`, `running()`): jobs in known states, written as a worker would have.
- `create_runs_table`, `runs`: the `runs` table that the tasks of `tests/worker_app.py`
  write every run to.
- `job_row_locked`: hold a job's row lock, so that writing its outcome has to wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgjobs import App
from tests.helpers.waiting import wait_until
from tests.helpers.workers import WorkerProcess


def _table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def create_runs_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create `<schema>.runs`, where the test App's tasks record every run."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (job_id bigint, attempt int, label text, worker_id text,"
            " at timestamptz DEFAULT clock_timestamp())"
        ).format(_table(schema, "runs"))
    )


@contextmanager
def job_row_locked(database_url: str, schema: str, job_id: int) -> Iterator[None]:
    """Hold a row lock on one job for the duration, so a worker's write to it waits.

    A way to freeze the moment between "the task returned" and "its outcome is in the
    table" (claims skip locked rows, so the rest of the queue keeps moving).
    """
    with psycopg.connect(database_url) as blocker:
        blocker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(
                _table(schema, "jobs_live")
            ),
            (job_id,),
        )
        yield


def job(observer: psycopg.Connection[Any], schema: str, job_id: int) -> dict[str, Any]:
    """One row of `<schema>.jobs` as a dict; AssertionError if there is none."""
    with observer.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL("SELECT * FROM {} WHERE id = %s").format(_table(schema, "jobs")), (job_id,)
        ).fetchone()
    if row is None:
        raise AssertionError(f"no job {job_id} in {schema}.jobs")
    return row


def jobs(observer: psycopg.Connection[Any], schema: str) -> list[dict[str, Any]]:
    """Every row of `<schema>.jobs`, by id."""
    with observer.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL("SELECT * FROM {} ORDER BY id").format(_table(schema, "jobs"))
        ).fetchall()


def runs(observer: psycopg.Connection[Any], schema: str) -> list[dict[str, Any]]:
    """Every row of `<schema>.runs`, in the order the runs were recorded."""
    with observer.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL("SELECT * FROM {} ORDER BY at, job_id, attempt").format(_table(schema, "runs"))
        ).fetchall()


def wait_for_job(
    observer: psycopg.Connection[Any],
    schema: str,
    job_id: int,
    state: str = "completed",
    *,
    timeout: float = 10.0,
    worker: WorkerProcess | None = None,
) -> dict[str, Any]:
    """Wait until job `job_id` is in `state`; returns its row.

    On timeout the message shows the job as it is and, given `worker`, the worker's logs.
    """
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(job(observer, schema, job_id))
        return bool(found["state"] == state)

    def explain() -> str:
        logs = f"; {worker.describe()}" if worker is not None else ""
        return f"job {job_id} never became {state}: {found}{logs}"

    wait_until(reached, timeout, message=explain)
    return found


def make_job(
    app: App,
    observer: psycopg.Connection[Any],
    *,
    task: str = "t",
    queue: str = "default",
    **columns: Any,
) -> int:
    """Enqueue a job, then set `columns` directly, as a worker would have."""
    job_id = app.enqueue(None, task, {"n": 1}, queue=queue)
    if columns:
        update_job(observer, app.schema, job_id, **columns)
    return job_id


def update_job(observer: psycopg.Connection[Any], schema: str, job_id: int, **columns: Any) -> None:
    """Set columns of one job directly: in jobs_live while it is there (a job given a
    final state moves to the history), else through the `jobs` view."""
    assignments = [
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in columns
    ]
    params = {
        name: Jsonb(value) if name in ("errors", "payload") else value
        for name, value in columns.items()
    }
    for table in ("jobs_live", "jobs"):
        changed = observer.execute(
            sql.SQL("UPDATE {} SET {} WHERE id = %(id)s").format(
                sql.Identifier(schema, table), sql.SQL(", ").join(assignments)
            ),
            {**params, "id": job_id},
        )
        if changed.rowcount:
            return


def ago(seconds: float = 0) -> datetime:
    """An aware timestamp `seconds` in the past."""
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def job_ids(observer: psycopg.Connection[Any], schema: str) -> list[int]:
    """Ids of every job of the schema."""
    rows = observer.execute(
        sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "jobs"))
    ).fetchall()
    return [row[0] for row in rows]


ERRORS = [
    {
        "attempt": 1,
        "at": "2024-05-01T12:00:00+00:00",
        "error": "ValueError: first [boom]\nmore detail",
        "traceback": 'Traceback (most recent call last):\n  File "t.py", line 3\n'
        "ValueError: first [boom]",
        "worker": "host-a:41",
    },
    {
        "attempt": 2,
        "at": "2024-05-01T12:00:05+00:00",
        "error": "ValueError: second",
        "traceback": "Traceback (most recent call last):\nValueError: second",
        "worker": "host-b:7",
    },
]


def failed(finished_ago: float = 0) -> dict[str, Any]:
    """Columns of a job that failed its last allowed attempt."""
    return {
        "state": "failed",
        "attempts": 2,
        "max_attempts": 2,
        "started_at": ago(finished_ago + 1),
        "finished_at": ago(finished_ago),
        "errors": ERRORS,
    }


def completed(finished_ago: float = 0) -> dict[str, Any]:
    """Columns of a job that succeeded at its first attempt."""
    return {
        "state": "completed",
        "attempts": 1,
        "started_at": ago(finished_ago + 1),
        "finished_at": ago(finished_ago),
    }


def cancelled(finished_ago: float = 0) -> dict[str, Any]:
    """Columns of a job cancelled while it waited."""
    return {"state": "cancelled", "finished_at": ago(finished_ago)}


def running() -> dict[str, Any]:
    """Columns of a job a worker holds."""
    return {
        "state": "running",
        "attempts": 1,
        "started_at": ago(),
        "heartbeat_at": ago(),
        "worker_id": "host-a:41",
    }


def table_scans(observer: psycopg.Connection[Any], schema: str, index: str) -> dict[str, int]:
    """jobs_live's sequential scans, and `index`'s entries read and rows fetched by plain
    index scans (a bitmap scan fetches none), counted so far, this session's included
    (`pg_stat_force_next_flush()`: PostgreSQL 15 and later)."""
    observer.execute("SELECT pg_stat_force_next_flush()")
    observer.execute("SELECT pg_stat_clear_snapshot()")
    row = observer.execute(
        """
        SELECT t.seq_scan, i.idx_tup_read, i.idx_tup_fetch
        FROM pg_stat_user_tables AS t
        JOIN pg_stat_user_indexes AS i USING (relid)
        WHERE t.schemaname = %s AND t.relname = 'jobs_live' AND i.indexrelname = %s
        """,
        (schema, index),
    ).fetchone()
    assert row is not None
    return dict(zip(("seq_scan", "entries_read", "rows_fetched"), row, strict=True))
