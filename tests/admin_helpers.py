"""Helpers for the inspection and management tests: jobs in known states, the CLI in-process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from pgjobs import App
from pgjobs.cli import main


@dataclass
class Result:
    """What a CLI run printed and its exit status."""

    code: int
    out: str
    err: str


def run_cli(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str, *args: str
) -> Result:
    """Run `pgjobs ARGS --database-url … --schema …` in this process."""
    capsys.readouterr()
    try:
        main([*args, "--database-url", database_url, "--schema", schema])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:  # pragma: no cover - main always exits
        code = 0
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


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
    """Set columns of one job directly."""
    assignments = [
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in columns
    ]
    params = {
        name: Jsonb(value) if name in ("errors", "payload") else value
        for name, value in columns.items()
    }
    observer.execute(
        sql.SQL("UPDATE {} SET {} WHERE id = %(id)s").format(
            sql.Identifier(schema, "jobs"), sql.SQL(", ").join(assignments)
        ),
        {**params, "id": job_id},
    )


def ago(seconds: float = 0) -> datetime:
    """An aware timestamp `seconds` in the past."""
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def job(observer: psycopg.Connection[Any], schema: str, job_id: int) -> dict[str, Any] | None:
    """One committed job as a dict, or None."""
    with observer.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT * FROM {} WHERE id = %(id)s").format(sql.Identifier(schema, "jobs")),
            {"id": job_id},
        )
        return cur.fetchone()


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
