"""Migrations: the schema matches the metadata, lives in its own PostgreSQL schema, ships in
the wheel, and its trigger sends exactly the NOTIFYs workers rely on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
import venv
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgjobs import App
from pgjobs.cli import main
from pgjobs.data.history import JOB_COLUMNS, PARTITION_NAME
from pgjobs.data.sql import notify_channel
from pgjobs.migrate import head_revision, upgrade
from pgjobs.schema import JOBS_STORAGE_PARAMETERS, build_metadata
from tests.helpers import REPO_ROOT

SENTINEL_QUEUE = "sentinel"
UNREACHABLE_URL = "postgresql://nobody@127.0.0.1:1/none"


def run_cli(*args: str) -> int:
    """Run the `pgjobs` command line in this process; returns its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    code = exit_info.value.code
    return code if isinstance(code, int) else 1


def schema_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (name,)).fetchone()
    return row is not None and row[0] == 1


def table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(schema, table).as_string(),)
    ).fetchone()
    return bool(row and row[0])


def job_ids(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "jobs"))
    return [row[0] for row in conn.execute(query).fetchall()]


@pytest.fixture
def schema_names(database_url: str) -> Iterator[Callable[[str], str]]:
    """Makes unique schema names for a test and drops whatever they became afterwards."""
    names: list[str] = []

    def make(prefix: str) -> str:
        names.append(f"{prefix}{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """A brand-new database, so that nothing else has put tables into its `public`."""
    name = f"pgjobs_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(database_url, dbname=name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(database_url),
        poolclass=sa.pool.NullPool,
    )
    yield engine
    engine.dispose()


def schema_differences(engine: sa.Engine, schema: str, metadata: sa.MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make `schema` match `metadata`."""

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == schema
        # The history's partitions are made day by day, not by migrations.
        partition = type_ == "table" and PARTITION_NAME.match(name or "")
        return not ((type_ == "table" and name == "alembic_version") or partition)

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        return not (type_ == "table" and name == "alembic_version")

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table_schema": schema,
                "include_schemas": True,
                "include_name": include_name,
                "include_object": include_object,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        return list(compare_metadata(context, metadata))


def test_migrated_schema_matches_the_metadata(engine: sa.Engine, schema: str) -> None:
    assert schema_differences(engine, schema, build_metadata(schema)) == []


def test_both_job_tables_have_the_columns_the_moving_statements_list(schema: str) -> None:
    # COMPLETE_JOBS inserts into the history the rows it deletes from jobs_live, column
    # by column in JOB_COLUMNS' order.
    tables = build_metadata(schema).tables
    for name in ("jobs_live", "jobs_history"):
        assert tuple(c.name for c in tables[f"{schema}.{name}"].columns) == JOB_COLUMNS


def test_storage_parameters_and_partial_indexes_match_the_metadata(
    observer: psycopg.Connection[Any], schema: str
) -> None:
    # Autogenerate compares neither storage parameters nor index predicates.
    jobs = f"{sql.Identifier(schema).as_string()}.jobs_live"
    [options] = observer.execute(
        "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [jobs]
    ).fetchone() or [None]
    partial = dict(
        observer.execute(
            "SELECT c.relname, i.indpred IS NOT NULL FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
            [jobs],
        ).fetchall()
    )

    assert dict(option.split("=", 1) for option in options) == JOBS_STORAGE_PARAMETERS
    expected = {
        index.name: index.dialect_options["postgresql"]["where"] is not None
        for index in build_metadata(schema).tables[f"{schema}.jobs_live"].indexes
    }
    assert {name: flag for name, flag in partial.items() if name != "jobs_pkey"} == expected


def _add_column(metadata: sa.MetaData, schema: str) -> None:
    metadata.tables[f"{schema}.jobs_live"].append_column(sa.Column("extra", sa.Text))


def _add_index(metadata: sa.MetaData, schema: str) -> None:
    sa.Index("jobs_task_idx", metadata.tables[f"{schema}.jobs_live"].c.task)


def _change_default(metadata: sa.MetaData, schema: str) -> None:
    metadata.tables[f"{schema}.jobs_live"].c.queue.server_default = sa.DefaultClause("other")


@pytest.mark.parametrize(
    ("drift", "expected"),
    [(_add_column, "add_column"), (_add_index, "add_index"), (_change_default, "modify_default")],
)
def test_metadata_comparison_detects_drift(
    engine: sa.Engine,
    schema: str,
    drift: Callable[[sa.MetaData, str], None],
    expected: str,
) -> None:
    metadata = build_metadata(schema)
    drift(metadata, schema)

    differences = schema_differences(engine, schema, metadata)

    # Column changes come back wrapped in a list per column; table-level ones do not.
    kinds = [d[0][0] if isinstance(d, list) else d[0] for d in differences]
    assert kinds == [expected]


def test_migrate_twice_is_a_no_op(
    database_url: str, schema_names: Callable[[str], str], observer: psycopg.Connection[Any]
) -> None:
    schema = schema_names("twice_")
    assert run_cli("migrate", "--database-url", database_url, "--schema", schema) == 0
    app = App(database_url, schema=schema)
    job_id = app.enqueue(None, "t", {"n": 1})
    app.close()
    table_row = sql.SQL("SELECT oid, xmin::text FROM pg_class WHERE oid = {}::regclass").format(
        sql.Literal(sql.Identifier(schema, "jobs").as_string())
    )
    before = observer.execute(table_row).fetchone()

    assert run_cli("migrate", "--database-url", database_url, "--schema", schema) == 0

    assert observer.execute(table_row).fetchone() == before
    versions = observer.execute(
        sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(schema, "alembic_version"))
    ).fetchall()
    assert versions == [(head_revision(),)]
    assert job_ids(observer, schema) == [job_id]


def test_alembic_version_table_lives_in_the_pgjobs_schema(fresh_database_url: str) -> None:
    upgrade(fresh_database_url, "queue_a")

    with psycopg.connect(fresh_database_url) as conn:
        assert table_exists(conn, "queue_a", "alembic_version")
        assert not table_exists(conn, "public", "alembic_version")
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " ORDER BY 1, 2"
        ).fetchall()
    assert {schema for schema, _ in tables} == {"queue_a"}
    assert {("queue_a", "alembic_version"), ("queue_a", "jobs")} <= set(tables)


def test_two_schemas_in_one_database_are_independent(
    database_url: str, schema_names: Callable[[str], str], observer: psycopg.Connection[Any]
) -> None:
    first, second = schema_names("first_"), schema_names("second_")
    upgrade(database_url, first)
    upgrade(database_url, second)
    first_app, second_app = App(database_url, schema=first), App(database_url, schema=second)

    first_ids = first_app.enqueue_many(None, [("t", {"n": n}) for n in range(3)])
    assert job_ids(observer, second) == []
    second_id = second_app.enqueue(None, "t", {})
    first_app.close()
    second_app.close()

    assert job_ids(observer, first) == first_ids
    # Each schema has its own id sequence: the second starts where the first did.
    assert job_ids(observer, second) == [second_id] == [first_ids[0]]


def test_migrate_sql_prints_ddl_without_connecting(
    database_url: str,
    schema_names: Callable[[str], str],
    observer: psycopg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    schema = schema_names("Sql Only ")
    quoted = sql.Identifier(schema).as_string()

    status = run_cli("migrate", "--sql", "--database-url", UNREACHABLE_URL, "--schema", schema)

    ddl = capsys.readouterr().out
    assert status == 0
    assert f"CREATE SCHEMA IF NOT EXISTS {quoted}" in ddl
    assert f"CREATE TABLE {quoted}.jobs" in ddl
    assert f"INSERT INTO {quoted}.alembic_version" in ddl
    assert not schema_exists(observer, schema)


def test_schema_name_with_odd_characters_migrates_and_enqueues(
    database_url: str, schema_names: Callable[[str], str], observer: psycopg.Connection[Any]
) -> None:
    schema = schema_names('we"ird sch-éma;')

    assert run_cli("migrate", "--database-url", database_url, "--schema", schema) == 0
    app = App(database_url, schema=schema)
    job_id = app.enqueue(None, "t", {"n": 1})
    app.close()

    assert job_ids(observer, schema) == [job_id]
    assert table_exists(observer, schema, "alembic_version")


@pytest.fixture
def listener(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection listening on the schema's channel, as a worker does."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(schema))))
        yield conn


def notifications_before_sentinel(
    app: App, listener: psycopg.Connection[Any]
) -> list[psycopg.Notify]:
    """Everything the listener received up to a committed job on the sentinel queue.

    PostgreSQL delivers notifications in commit order, so whatever earlier transactions
    sent arrives before the sentinel: proving "nothing was sent" needs no waiting.
    """
    app.enqueue(None, "sentinel", {}, queue=SENTINEL_QUEUE)
    received: list[psycopg.Notify] = []
    for notification in listener.notifies(timeout=10):
        if notification.payload == SENTINEL_QUEUE:
            return received
        received.append(notification)
    pytest.fail("the sentinel job's notification never arrived")


def test_committed_enqueue_notifies_the_queue_name(
    app: App, schema: str, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    app.enqueue(conn, "t", {}, queue="mail")
    conn.commit()

    [notification] = listener.notifies(timeout=10, stop_after=1)
    assert (notification.channel, notification.payload) == (notify_channel(schema), "mail")
    assert notifications_before_sentinel(app, listener) == []


def test_rolled_back_enqueue_notifies_nobody(
    app: App, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    app.enqueue(conn, "t", {}, queue="mail")
    conn.rollback()

    assert notifications_before_sentinel(app, listener) == []


def test_delayed_job_notifies_nobody(
    app: App, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    app.enqueue(conn, "t", {}, queue="mail", delay=60)
    conn.commit()

    assert notifications_before_sentinel(app, listener) == []


def test_bulk_enqueue_notifies_once_per_queue(
    app: App, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    items: list[Any] = [
        ("t", {"n": n}, {"queue": "mail" if n % 2 else "images"}) for n in range(1_000)
    ]
    app.enqueue_many(conn, items)
    conn.commit()

    received = notifications_before_sentinel(app, listener)
    assert sorted(n.payload for n in received) == ["images", "mail"]


def test_notify_channel_of_an_odd_schema_name_matches_the_trigger(
    database_url: str, schema_names: Callable[[str], str]
) -> None:
    schema = schema_names('we"ird sch-éma;')
    upgrade(database_url, schema)
    app = App(database_url, schema=schema)
    with psycopg.connect(database_url, autocommit=True) as listening:
        listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(schema))))

        app.enqueue(None, "t", {}, queue="mail")

        received = [n.payload for n in listening.notifies(timeout=10, stop_after=1)]
    app.close()
    assert received == ["mail"]


def clean_environment() -> dict[str, str]:
    """The environment minus anything that would point a command at another database or
    at this checkout's sources."""
    hidden = {"PGJOBS_DATABASE_URL", "DATABASE_URL", "PGJOBS_SCHEMA", "PYTHONPATH", "VIRTUAL_ENV"}
    return {key: value for key, value in os.environ.items() if key not in hidden}


@pytest.mark.slow
def test_installed_wheel_migrates_from_any_directory(
    database_url: str,
    schema_names: Callable[[str], str],
    observer: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    # Build from a copy so that concurrent runs never share setuptools' build/ folder.
    source = tmp_path / "source"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "__pycache__", "build", "dist", "*.egg-info", "venv", "pgdata", "*.log"
        ),
    )
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    env = clean_environment()
    subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, source], check=True, env=env)
    [wheel] = wheels.glob("pgjobs_queue-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "pgjobs/migrations/versions/0001_create_jobs.py" in archive.namelist()
    # No pip inside the venv (the slow part of creating one): this pip installs into it.
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False, system_site_packages=False, symlinks=True)
    python = environment / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", wheel], check=True, env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    schema = schema_names("wheel_")

    located = subprocess.run(
        [python, "-c", "import pgjobs; print(pgjobs.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    migrated = subprocess.run(
        [
            environment / "bin" / "pgjobs",
            "migrate",
            "--database-url",
            database_url,
            "--schema",
            schema,
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )

    assert Path(located.stdout.strip()).is_relative_to(environment)
    assert migrated.returncode == 0, migrated.stderr
    assert table_exists(observer, schema, "jobs")
