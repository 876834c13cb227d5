"""`pgjobs enqueue TASK`: by name from a shell, with the task's own defaults given `--app`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.helpers import pgjobs

TASKS = """
import pgjobs

app = pgjobs.App()


@app.task(name="email.send", queue="mail", priority=5, max_attempts=10)
def send_email(to: str) -> None: ...
"""


@pytest.fixture
def producer(tmp_path: Path) -> Path:
    """A folder holding `producer_tasks.py`, whose App registers `email.send`."""
    (tmp_path / "producer_tasks.py").write_text(TASKS)
    return tmp_path


def enqueue(database_url: str, schema: str, cwd: Path, *args: str, **env: str) -> int:
    result = pgjobs(
        "enqueue",
        "email.send",
        "--payload",
        '{"to": "a@example.com"}',
        *args,
        "--database-url",
        database_url,
        "--schema",
        schema,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def options(observer: psycopg.Connection[Any], schema: str, job_id: int) -> tuple[Any, ...]:
    query = sql.SQL("SELECT queue, priority, max_attempts FROM {} WHERE id = %s").format(
        sql.Identifier(schema, "jobs")
    )
    row = observer.execute(query, [job_id]).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.slow
def test_enqueue_with_app_uses_the_task_defaults(
    database_url: str, schema: str, observer: psycopg.Connection[Any], producer: Path
) -> None:
    job_id = enqueue(database_url, schema, producer, "--app", "producer_tasks:app")

    assert options(observer, schema, job_id) == ("mail", 5, 10)


@pytest.mark.slow
def test_enqueue_takes_the_app_from_pgjobs_app(
    database_url: str, schema: str, observer: psycopg.Connection[Any], producer: Path
) -> None:
    job_id = enqueue(database_url, schema, producer, PGJOBS_APP="producer_tasks:app")

    assert options(observer, schema, job_id) == ("mail", 5, 10)


@pytest.mark.slow
def test_enqueue_options_win_over_the_task_defaults(
    database_url: str, schema: str, observer: psycopg.Connection[Any], producer: Path
) -> None:
    job_id = enqueue(
        database_url, schema, producer, "--app", "producer_tasks:app", "--priority", "9"
    )

    assert options(observer, schema, job_id) == ("mail", 9, 10)


@pytest.mark.slow
def test_enqueue_without_app_uses_the_app_wide_defaults(
    database_url: str, schema: str, observer: psycopg.Connection[Any], producer: Path
) -> None:
    job_id = enqueue(database_url, schema, producer)

    assert options(observer, schema, job_id) == ("default", 0, 20)
