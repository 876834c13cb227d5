"""pgjobs.contrib.django: jobs in Django's transaction, settings, and the manage.py commands.

Django runs in this process with tests/django_site's settings (see its `fixtures`); the
workers are real `manage.py pgjobs_work` processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.django_site.workers import StartDjangoWorker
from tests.helpers import REPO_ROOT, create_runs_table, jobs, runs, wait_until

Connection = psycopg.Connection[Any]
# django_project, django_schema and start_django_worker.
pytest_plugins = ["tests.django_site.fixtures"]


def labels(observer: Connection, schema: str) -> list[str]:
    return [run["label"] for run in runs(observer, schema)]


def row(label: str) -> None:
    """A row of the application's own, written on Django's connection."""
    from tests.django_site.tasks import record

    record(label)


@pytest.fixture
def runs_table(django_schema: str, observer: Connection) -> str:
    """`<schema>.runs`, the application's table in these tests; the schema."""
    create_runs_table(observer, django_schema)
    return django_schema


def test_a_job_enqueued_in_atomic_commits_with_the_block(
    runs_table: str, observer: Connection
) -> None:
    from django.db import connection, transaction

    from tests.django_site.tasks import note

    # when: a row and a job in one atomic block
    with transaction.atomic():
        row("order 1")
        job_id = note.enqueue(connection, label="receipt")
        # then: neither is visible to others before the block commits
        assert jobs(observer, runs_table) == []
    # then: both are, after
    assert [job["id"] for job in jobs(observer, runs_table)] == [job_id]
    assert labels(observer, runs_table) == ["order 1"]


def test_a_rolled_back_block_leaves_neither_row_nor_job(
    runs_table: str, observer: Connection
) -> None:
    from django.db import connection, transaction

    from tests.django_site.tasks import note

    # when: the block raises after the row and the job
    with pytest.raises(RuntimeError), transaction.atomic():
        row("order 1")
        note.enqueue(connection, label="receipt")
        raise RuntimeError("payment refused")
    # then: nothing of it remains
    assert jobs(observer, runs_table) == []
    assert labels(observer, runs_table) == []


def test_a_rolled_back_savepoint_drops_only_its_job(runs_table: str, observer: Connection) -> None:
    from django.db import connection, transaction

    from tests.django_site.tasks import note

    # when: an inner atomic block (a savepoint) rolls back inside one that commits
    with transaction.atomic():
        before = note.enqueue(connection, label="before")
        with pytest.raises(RuntimeError), transaction.atomic():
            note.enqueue(connection, label="inside")
            raise RuntimeError("undo the savepoint")
        after = note.enqueue(connection, label="after")
    # then: the jobs around the savepoint are committed, the one inside it is not
    assert [job["id"] for job in jobs(observer, runs_table)] == [before, after]
    assert [job["payload"]["label"] for job in jobs(observer, runs_table)] == ["before", "after"]


def test_every_way_of_enqueueing_takes_djangos_connection(
    django_schema: str, observer: Connection
) -> None:
    from django.db import connection, transaction

    import pgjobs
    from tests.django_site.jobs import app
    from tests.django_site.tasks import note

    def enqueue_every_way() -> None:
        note.options(priority=3).enqueue(connection, label="options")
        app.enqueue(connection, "tests.django_site.tasks.note", {"label": "by name"})
        # Past 200 jobs, enqueue_many streams them with COPY.
        app.enqueue_many(connection, [("bulk", {"n": n}) for n in range(250)])
        flow = pgjobs.Workflow("flow")
        flow.add(note, after=[flow.add(note, label="first")], label="second")
        flow.enqueue(connection)

    # when: every way, in a block that rolls back
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_every_way()
        raise RuntimeError
    # then: nothing
    assert jobs(observer, django_schema) == []
    # when: every way, in a block that commits; then: all of it
    with transaction.atomic():
        enqueue_every_way()
    assert len(jobs(observer, django_schema)) == 1 + 1 + 250 + 2


def test_any_alias_enqueues_in_its_own_transaction(
    django_schema: str, observer: Connection
) -> None:
    from django.db import connections, transaction

    from tests.django_site.tasks import note

    other = connections["other"]
    # when: a block of the alias "other" rolls back, then one commits
    with pytest.raises(RuntimeError), transaction.atomic(using="other"):
        note.enqueue(other, label="rolled back")
        raise RuntimeError
    with transaction.atomic(using="other"):
        kept = note.enqueue(other, label="kept")
    # then: only the committed block's job exists
    assert [job["id"] for job in jobs(observer, django_schema)] == [kept]


def test_outside_atomic_the_job_commits_at_once(django_schema: str, observer: Connection) -> None:
    from django.db import connection

    from tests.django_site.tasks import note

    # when: no atomic block, so Django's autocommit
    job_id = note.enqueue(connection, label="now")
    # then: the job is there for others at once
    assert [job["id"] for job in jobs(observer, django_schema)] == [job_id]


def test_async_code_enqueues_through_sync_to_async(
    django_schema: str, observer: Connection
) -> None:
    from asgiref.sync import async_to_sync, sync_to_async
    from django.db import connection

    from tests.django_site.tasks import note

    async def view() -> int:  # as an async view does (docs/django.md)
        return int(await sync_to_async(note.enqueue)(connection, label="from async"))

    job_id = async_to_sync(view)()
    assert [job["id"] for job in jobs(observer, django_schema)] == [job_id]


def test_a_connection_to_another_database_is_refused(
    django_schema: str, observer: Connection
) -> None:
    from django.db import connections

    from tests.django_site.tasks import note

    with pytest.raises(TypeError, match=r"enqueues on PostgreSQL.*'lite' is sqlite"):
        note.enqueue(connections["lite"], label="nowhere")
    assert jobs(observer, django_schema) == []


def test_the_app_of_the_settings_points_at_djangos_database_and_schema(
    django_schema: str, database_url: str
) -> None:
    from django.test import override_settings

    from pgjobs.contrib.django import get_app
    from tests.django_site.jobs import app as project_app

    # given: PGJOBS_APP, PGJOBS_SCHEMA and DATABASES["default"]
    app = get_app()
    # then: the App of PGJOBS_APP, on DATABASES["default"] and the schema
    assert app is project_app
    assert app.schema == django_schema
    server = conninfo_to_dict(database_url)
    used = conninfo_to_dict(app.database.url)
    assert {key: used.get(key) for key in server} == server
    # when: PGJOBS_DATABASE_URL is set, it wins
    with override_settings(PGJOBS_DATABASE_URL="postgresql://queue@elsewhere/jobs"):
        assert get_app().database.url == "postgresql://queue@elsewhere/jobs"
    # when: there is no PGJOBS_APP or PGJOBS_SCHEMA, an App of its own, schema pgjobs
    with override_settings(PGJOBS_APP=None, PGJOBS_SCHEMA=None):
        own = get_app()
        assert own is not project_app
        assert own.schema == "pgjobs"


@pytest.mark.parametrize(
    ("reference", "error"),
    [
        ("tests.django_site.jobs", "PGJOBS_APP must look like module:attribute"),
        ("tests.no_such_module:app", "PGJOBS_APP: cannot import module 'tests.no_such_module'"),
        ("tests.django_site.jobs:nothing", "is not a pgjobs.App (found nothing)"),
    ],
)
def test_a_bad_pgjobs_app_is_one_clear_error(
    django_schema: str, reference: str, error: str
) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from pgjobs.contrib.django import get_app

    with override_settings(PGJOBS_APP=reference), pytest.raises(ImproperlyConfigured) as raised:
        get_app()
    assert error in str(raised.value)


@pytest.fixture
def new_schema(database_url: str) -> Iterator[str]:
    """A schema name nothing has created yet; dropped afterwards if something did."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_pgjobs_migrate_creates_the_schema_of_the_settings(
    django_project: None, new_schema: str, observer: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    from django.core.management import call_command
    from django.test import override_settings

    # when: pgjobs_migrate runs twice with PGJOBS_SCHEMA set
    with override_settings(PGJOBS_SCHEMA=new_schema):
        call_command("pgjobs_migrate")
        call_command("pgjobs_migrate")
    # then: the schema has pgjobs' tables, and the command said so
    query = "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
    [(tables,)] = observer.execute(query, (new_schema,)).fetchall()
    assert tables > 3
    assert f"schema {new_schema!r} is at revision" in capsys.readouterr().err


def test_pgjobs_migrate_sql_prints_the_ddl(
    django_project: None, new_schema: str, observer: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    from django.core.management import call_command

    call_command("pgjobs_migrate", "--sql", "--schema", new_schema)
    assert f'CREATE SCHEMA IF NOT EXISTS "{new_schema}"' in capsys.readouterr().out
    query = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s"
    assert observer.execute(query, (new_schema,)).fetchone() == (0,)


def manage(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` of the tests' project, as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "django", *args, "--settings", "tests.django_site.settings"],
        cwd=REPO_ROOT,
        env={**os.environ, "PGJOBS_DJANGO_TEST_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ("pgjobs_work", "--concurrency", "many"),
            "Invalid value for '--concurrency': 'many' is not a valid int",
        ),
        (("pgjobs_work", "--log-format", "xml"), "--log-format must be text or json, got 'xml'"),
        (("pgjobs_work", "--app", "tests.django_site:nothing"), "--app: tests.django_site:nothing"),
        (
            ("pgjobs_migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/none"),
            "cannot connect to PostgreSQL",
        ),
    ],
)
@pytest.mark.slow
def test_a_user_mistake_is_one_line_and_no_traceback(
    database_url: str, args: tuple[str, ...], error: str
) -> None:
    result = manage(database_url, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: ") and error in line, line


def test_pgjobs_work_runs_the_django_tasks_and_the_tasks_of_the_app(
    runs_table: str, observer: Connection, start_django_worker: StartDjangoWorker
) -> None:
    from django.db import connection

    from tests.django_site.more_tasks import shout
    from tests.django_site.tasks import note, run

    # given: a pgjobs task of PGJOBS_APP (declared in an app's tasks.py), a Django task,
    # and a Django task of a module listed in PGJOBS_TASK_MODULES
    note.enqueue(connection, label="pgjobs task")
    run.enqueue("django task")
    shouted = shout.enqueue("found through the setting")
    # when: manage.py pgjobs_work runs
    worker = start_django_worker()
    # then: it runs them all
    ran = {"django task", "pgjobs task"}
    wait_until(lambda: ran <= set(labels(observer, runs_table)), message=worker.describe)
    wait_until(lambda: shouted.refresh() or shouted.is_finished, message=worker.describe)
    assert shouted.return_value == "FOUND THROUGH THE SETTING"
    # when: SIGTERM; then: it drains and exits 0
    assert worker.stop() == 0, worker.describe()
