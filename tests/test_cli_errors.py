"""The command line as a user meets it: a real process, one clear line per mistake."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.helpers import UNREACHABLE_URL, pgjobs, the_error_line


def jobs(observer: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    query = sql.SQL("SELECT id, task, payload, queue, priority FROM {} ORDER BY id").format(
        sql.Identifier(schema, "jobs")
    )
    return observer.execute(query).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("command", [["migrate"], ["enqueue", "t"]])
def test_unreachable_database_is_one_line(command: list[str]) -> None:
    result = pgjobs(*command, "--database-url", UNREACHABLE_URL)

    assert "127.0.0.1" in the_error_line(result)


@pytest.mark.slow
def test_unmigrated_schema_says_to_run_migrate(
    database_url: str, observer: psycopg.Connection[Any]
) -> None:
    schema = f"never_migrated_{uuid.uuid4().hex[:8]}"

    result = pgjobs("enqueue", "t", "--schema", schema, "--database-url", database_url)

    assert f"pgjobs migrate --schema {schema}" in the_error_line(result)
    row = observer.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
    assert row.fetchone() == (0,)


@pytest.mark.slow
def test_unknown_option_is_one_line() -> None:
    result = pgjobs("migrate", "--bogus")

    assert "--bogus" in the_error_line(result)


@pytest.mark.slow
def test_payload_that_is_not_json_is_one_line_naming_json(database_url: str, schema: str) -> None:
    result = pgjobs(
        "enqueue", "t", "--payload", "{to: a}", "--database-url", database_url, "--schema", schema
    )

    assert "JSON" in the_error_line(result)


@pytest.mark.slow
def test_payload_that_is_not_an_object_is_one_line(
    database_url: str, schema: str, observer: psycopg.Connection[Any]
) -> None:
    result = pgjobs(
        "enqueue", "t", "--payload", "[1]", "--database-url", database_url, "--schema", schema
    )

    assert "--payload" in the_error_line(result)
    assert jobs(observer, schema) == []


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("url", ["not a url", "mysql://root:s3cret@db.example.com/shop"])
def test_database_url_that_is_not_postgresql_is_one_line_without_the_password(url: str) -> None:
    result = pgjobs("stats", "--database-url", url)

    line = the_error_line(result)
    assert "database URL" in line
    assert "s3cret" not in line


@pytest.mark.slow
def test_database_url_from_the_environment_is_checked_too() -> None:
    result = pgjobs("stats", env={"PGJOBS_DATABASE_URL": "mysql://localhost/shop"})

    assert "postgresql://" in the_error_line(result)


@pytest.mark.slow
def test_prune_retention_too_long_to_compute_is_one_line(database_url: str, schema: str) -> None:
    result = pgjobs(
        "prune",
        "--older-than",
        "99999999999999999999w",
        "--database-url",
        database_url,
        "--schema",
        schema,
    )

    assert "--older-than must be at most" in the_error_line(result)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--concurrency", "100000"),
        ("--poll-interval", "nan"),
        ("--rescue-after", "nan"),
        ("--shutdown-timeout", "inf"),
    ],
)
def test_bad_worker_setting_is_one_line_before_importing_the_app_or_connecting(
    option: str, value: str
) -> None:
    # The App's module does not exist and the database cannot be reached: the error can
    # only be about the setting if the setting is checked first.
    result = pgjobs(
        "work", "--app", "no_such_module:app", option, value, "--database-url", UNREACHABLE_URL
    )

    assert option in the_error_line(result)


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(source)


@pytest.mark.slow
def test_app_whose_module_imports_a_missing_module_names_the_missing_one(tmp_path: Path) -> None:
    write_module(tmp_path, "tasks2", "import missing_dep\nimport pgjobs\napp = pgjobs.App()\n")

    result = pgjobs("work", "--app", "tasks2:app", "--database-url", UNREACHABLE_URL, cwd=tmp_path)

    assert the_error_line(result) == (
        "pgjobs: error: --app: importing 'tasks2' failed: No module named 'missing_dep'"
    )


@pytest.mark.slow
def test_app_whose_module_raises_on_import_is_one_line_with_the_cause(tmp_path: Path) -> None:
    write_module(tmp_path, "tasks3", "raise RuntimeError('SMTP_HOST is not set\\nmore')\n")

    result = pgjobs("enqueue", "t", "--app", "tasks3:app", cwd=tmp_path)

    assert the_error_line(result) == (
        "pgjobs: error: --app: importing 'tasks3' failed: RuntimeError: SMTP_HOST is not set"
    )


@pytest.mark.slow
def test_app_module_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    result = pgjobs("work", "--app", "nowhere.tasks:app", cwd=tmp_path)

    assert "cannot import module 'nowhere.tasks'" in the_error_line(result)


@pytest.mark.slow
def test_debug_flag_shows_the_traceback() -> None:
    result = pgjobs("stats", "--database-url", UNREACHABLE_URL, env={"PGJOBS_DEBUG": "1"})

    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "pgjobs: error:" not in result.stderr
