"""The command line as a user meets it: a real process, one clear line per mistake."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

REPO_ROOT = Path(__file__).parents[1]
UNREACHABLE_URL = "postgresql://x@127.0.0.1:1/db"


def pgjobs(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m pgjobs ARGS` with no database or schema inherited from this shell."""
    hidden = {"PGJOBS_DATABASE_URL", "DATABASE_URL", "PGJOBS_SCHEMA", "PGJOBS_DEBUG"}
    env = {key: value for key, value in os.environ.items() if key not in hidden}
    return subprocess.run(
        [sys.executable, "-m", "pgjobs", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `pgjobs: error:` line a failed command must print, and nothing else."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgjobs: error: ")
    return lines[0]


def jobs(observer: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    query = sql.SQL("SELECT id, task, payload, queue, priority FROM {} ORDER BY id").format(
        sql.Identifier(schema, "jobs")
    )
    return observer.execute(query).fetchall()


@pytest.mark.parametrize("command", [["migrate"], ["enqueue", "t"]])
def test_unreachable_database_is_one_line(command: list[str]) -> None:
    result = pgjobs(*command, "--database-url", UNREACHABLE_URL)

    assert "127.0.0.1" in the_error_line(result)


def test_unmigrated_schema_says_to_run_migrate(
    database_url: str, observer: psycopg.Connection[Any]
) -> None:
    schema = f"never_migrated_{uuid.uuid4().hex[:8]}"

    result = pgjobs("enqueue", "t", "--schema", schema, "--database-url", database_url)

    assert f"pgjobs migrate --schema {schema}" in the_error_line(result)
    row = observer.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
    assert row.fetchone() == (0,)


def test_unknown_option_is_one_line() -> None:
    result = pgjobs("migrate", "--bogus")

    assert "--bogus" in the_error_line(result)


def test_payload_that_is_not_json_is_one_line_naming_json(database_url: str, schema: str) -> None:
    result = pgjobs(
        "enqueue", "t", "--payload", "{to: a}", "--database-url", database_url, "--schema", schema
    )

    assert "JSON" in the_error_line(result)


def test_payload_that_is_not_an_object_is_one_line(
    database_url: str, schema: str, observer: psycopg.Connection[Any]
) -> None:
    result = pgjobs(
        "enqueue", "t", "--payload", "[1]", "--database-url", database_url, "--schema", schema
    )

    assert "--payload" in the_error_line(result)
    assert jobs(observer, schema) == []


@pytest.mark.parametrize(
    ("option", "value"), [("--delay", "-5"), ("--delay", "soon"), ("--max-attempts", "0")]
)
def test_invalid_option_value_is_one_line_and_enqueues_nothing(
    database_url: str,
    schema: str,
    observer: psycopg.Connection[Any],
    option: str,
    value: str,
) -> None:
    result = pgjobs(
        "enqueue", "t", option, value, "--database-url", database_url, "--schema", schema
    )

    assert option.lstrip("-").replace("-", "_") in the_error_line(result).replace("-", "_")
    assert jobs(observer, schema) == []


def test_enqueue_prints_the_new_job_id(
    database_url: str, schema: str, observer: psycopg.Connection[Any]
) -> None:
    result = pgjobs(
        "enqueue",
        "email.send",
        "--payload",
        '{"to": "a@example.com"}',
        "--queue",
        "mail",
        "--priority",
        "5",
        "--database-url",
        database_url,
        "--schema",
        schema,
    )

    assert result.returncode == 0, result.stderr
    assert jobs(observer, schema) == [
        (int(result.stdout), "email.send", {"to": "a@example.com"}, "mail", 5)
    ]


@pytest.mark.parametrize(
    ("command", "own_option"), [("migrate", "--sql"), ("enqueue", "--payload")]
)
def test_help_describes_the_command(command: str, own_option: str) -> None:
    result = pgjobs(command, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: pgjobs {command}")
    assert own_option in result.stdout
    assert "--database-url" in result.stdout
    assert "--schema" in result.stdout
