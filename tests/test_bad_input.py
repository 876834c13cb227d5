"""Bad input refused at the boundary, as a rule: one readable line or one precise error.

Every number that reaches the database or a timer is checked where it is given (an API
call, a decorator, a CLI option, the worker's settings) against what PostgreSQL and
Python can hold (`pgjobs/bounds.py`), before any SQL is sent. Each test here failed
before the fix it covers (issue: a newcomer's run with some 60 kinds of bad input).
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
from pgjobs import (
    App,
    InvalidJobError,
    InvalidScheduleError,
    InvalidTaskError,
    PayloadNotSerializableError,
    SchemaBehindError,
    SchemaNotMigratedError,
)
from pgjobs.admin import list_jobs
from pgjobs.bounds import MAX_DELAY_SECONDS, MAX_TIMER_SECONDS
from pgjobs.cli import main
from pgjobs.demo.display import Snapshot, display_row
from pgjobs.errors import ConfigurationError
from pgjobs.migrate import head_revision, upgrade
from pgjobs.schema_revision import (
    check_schema_revision,
    package_revisions,
    require_current_schema,
)
from pgjobs.testing import Jobs
from pgjobs.types import Job, JobState
from pgjobs.worker import WorkerSettings
from tests.helpers import UNREACHABLE_URL, Result, StartWorker, jobs, run_cli, wait_for_job
from tests.helpers.workers import REPO_ROOT, WORKER_APP

Connection = psycopg.Connection[Any]
FAR_DELAYS = [1e15, timedelta.max, 10**30, timedelta(days=3_000_000)]
# A worker setting is checked before the App's module is imported or anything connects.
NO_APP = "no_such_module_anywhere:app"


def the_line(result: Result) -> str:
    """The one error line a failed command printed (exit status not 0, no traceback)."""
    assert result.code != 0, result.out
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("pgjobs: error: "), lines[0]
    return lines[0]


def still_usable(conn: Connection) -> None:
    """The caller's transaction took no error: its next statement runs."""
    assert conn.execute("SELECT 1").fetchone() == (1,)


# --- 1. a far delay or run_at is refused before any SQL ---------------------------------


@pytest.mark.parametrize("delay", FAR_DELAYS)
def test_far_delay_is_refused_and_the_callers_transaction_stays_usable(
    app: App, conn: Connection, delay: float | timedelta
) -> None:
    with pytest.raises(InvalidJobError, match="delay must be at most"):
        app.enqueue(conn, "noop", {}, delay=delay)
    still_usable(conn)


def test_the_longest_delay_allowed_is_stored_and_read_back(app: App, conn: Connection) -> None:
    job_id = app.enqueue(conn, "noop", {}, delay=MAX_DELAY_SECONDS)

    query = sql.SQL("SELECT run_at FROM {} WHERE id = %s").format(
        sql.Identifier(app.schema, "jobs")
    )
    [(run_at,)] = conn.execute(query, (job_id,)).fetchall()
    assert run_at.year < 10000


def test_one_far_delay_in_enqueue_many_refuses_the_batch_before_any_sql(
    app: App, conn: Connection, schema: str, observer: Connection
) -> None:
    items: list[Any] = [("noop", {}), ("noop", {}, {"delay": 1e15})]

    with pytest.raises(InvalidJobError, match="delay must be at most"):
        app.enqueue_many(conn, items)
    still_usable(conn)
    conn.commit()
    assert jobs(observer, schema) == []


def test_far_delay_is_refused_by_enqueue_async(app: App, database_url: str) -> None:
    async def enqueue() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            with pytest.raises(InvalidJobError, match="delay must be at most"):
                await app.enqueue_async(conn, "noop", {}, delay=1e15)
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)

    asyncio.run(enqueue())


@pytest.mark.parametrize(
    "run_at",
    [
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # 10000 in UTC
        datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=2))),  # year 0 in UTC
    ],
)
def test_run_at_past_what_python_reads_back_is_refused(
    app: App, conn: Connection, run_at: datetime
) -> None:
    with pytest.raises(InvalidJobError, match="run_at must fall between"):
        app.enqueue(conn, "noop", {}, run_at=run_at)
    still_usable(conn)


def test_naive_run_at_is_still_refused_as_naive(app: App, conn: Connection) -> None:
    with pytest.raises(InvalidJobError, match="timezone-aware"):
        app.enqueue(conn, "noop", {}, run_at=datetime(9999, 12, 31))


# --- 2. settings, backoff and schedules ---------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"poll_interval": 1e20},
        {"shutdown_timeout": 1e20},
        {"rescue_after": 1e20},
        {"poll_interval": MAX_TIMER_SECONDS * 2},
    ],
)
def test_worker_settings_refuse_what_a_timer_cannot_hold(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="must be at most"):
        WorkerSettings(**settings)


@pytest.mark.parametrize("option", ["--poll-interval", "--shutdown-timeout", "--rescue-after"])
def test_worker_timer_option_past_what_a_timer_holds_is_one_line(
    capsys: pytest.CaptureFixture[str], option: str
) -> None:
    result = run_cli(capsys, UNREACHABLE_URL, "s", "work", "--app", NO_APP, option, "1e20")

    assert f"{option} must be at most" in the_line(result)


@pytest.mark.slow
def test_a_worker_runs_and_is_listed_with_every_timer_at_its_bound(
    app: App,
    observer: Connection,
    start_worker: StartWorker,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
) -> None:
    # given: a worker whose poll, rescue and shutdown timers are the longest allowed
    bound = f"{MAX_TIMER_SECONDS:.0f}"
    worker = start_worker(
        "--poll-interval", bound, "--rescue-after", bound, "--shutdown-timeout", bound
    )  # fmt: skip
    # when
    job_id = app.enqueue(None, "noop", {})
    # then: it runs jobs, `pgjobs workers` lists it, and it stops cleanly
    wait_for_job(observer, app.schema, job_id, worker=worker)
    listed = run_cli(capsys, database_url, app.schema, "workers")
    assert (listed.code, listed.err) == (0, "")
    assert worker.stop() == 0
    assert "Traceback" not in worker.logs()


def test_app_refuses_a_backoff_that_is_not_one() -> None:
    with pytest.raises(ConfigurationError, match=r"backoff must be a pgjobs\.Backoff"):
        App(UNREACHABLE_URL, backoff="x")  # type: ignore[arg-type]


def test_task_refuses_a_backoff_that_is_not_one(app: App) -> None:
    with pytest.raises(InvalidTaskError, match=r"backoff must be a pgjobs\.Backoff"):

        @app.task(backoff=3)  # type: ignore[arg-type]
        def work() -> None: ...

    assert app.tasks == {}


@pytest.mark.parametrize(
    "fields",
    [{"cap": 1e20}, {"base": math.nan}, {"factor": math.inf}, {"jitter": math.nan}],
)
def test_backoff_refuses_values_that_would_break_a_retry(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        pgjobs.Backoff(**fields)


@pytest.mark.parametrize(
    "every", [timedelta(days=999_999_999), 10**30, 1e300, timedelta(days=3_000_000)]
)
def test_periodic_interval_too_long_for_a_date_is_an_invalid_schedule(
    app: App, every: float | timedelta
) -> None:
    with pytest.raises(InvalidScheduleError, match="every must be at most"):

        @app.periodic(every=every)
        @app.task(name="report")
        def report() -> None: ...


def test_periodic_max_lateness_too_long_is_an_invalid_schedule(app: App) -> None:
    with pytest.raises(InvalidScheduleError, match="max_lateness must be at most"):

        @app.periodic(every=60, max_lateness=10**400)
        @app.task(name="report")
        def report() -> None: ...


def test_task_timeout_past_what_a_timer_holds_is_refused(app: App) -> None:
    with pytest.raises(InvalidTaskError, match="timeout of task 'slow' must be at most"):

        @app.task(name="slow", timeout=1e20)
        def slow() -> None: ...


# --- 3. CLI options, snoozes and the testing clock ------------------------------------------


def test_cli_delay_past_the_year_9999_is_one_line_and_enqueues_nothing(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str, observer: Connection
) -> None:
    result = run_cli(capsys, database_url, schema, "enqueue", "noop", "--delay", "1e12")

    assert "delay must be at most" in the_line(result)
    assert jobs(observer, schema) == []


@pytest.mark.parametrize("delay", [1e15, math.nan, math.inf, -1])
def test_snooze_delay_that_cannot_be_stored_is_refused_where_it_is_raised(delay: float) -> None:
    with pytest.raises(ValueError, match="SnoozeJob delay"):
        pgjobs.SnoozeJob(delay)


def test_testing_clock_advance_past_the_year_9999_is_refused_and_the_test_goes_on(
    app: App, conn: Connection
) -> None:
    app.enqueue(conn, "noop", {}, delay=60)
    with Jobs(app, conn) as helper:
        with pytest.raises(ValueError, match="advance must be at most"):
            helper.run(advance=1e20)
        still_usable(conn)


def test_list_limit_past_bigint_is_one_line(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    result = run_cli(capsys, database_url, schema, "list", "--limit", "99999999999999999999")

    assert "--limit" in the_line(result)


def test_list_jobs_limit_past_bigint_is_a_configuration_error(app: App) -> None:
    with pytest.raises(ConfigurationError, match="limit must be from 1 to"):
        list_jobs(app, limit=2**63)


# --- 4. --rescue-after below a heartbeat's reach ------------------------------------------


@pytest.mark.parametrize("seconds", [0.01, 0.5])
def test_rescue_after_below_one_second_is_refused(seconds: float) -> None:
    with pytest.raises(ConfigurationError, match="--rescue-after must be at least 1 second"):
        WorkerSettings(rescue_after=seconds)


def test_rescue_after_of_one_second_is_accepted() -> None:
    assert WorkerSettings(rescue_after=1).heartbeat_interval == 0.25


def test_rescue_after_below_one_second_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(
        capsys, UNREACHABLE_URL, "s", "work", "--app", NO_APP, "--rescue-after", "0.01"
    )

    assert "--rescue-after must be at least 1 second" in the_line(result)


def test_work_help_states_the_rescue_after_bound(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["work", "--help"])

    assert "at least 1" in " ".join(capsys.readouterr().out.split())


# --- 5. a schema one migration behind -------------------------------------------------------


@pytest.fixture
def schema_behind(database_url: str) -> Iterator[str]:
    """A schema migrated to the revision before the newest this pgjobs ships."""
    name = f"t_behind_{uuid.uuid4().hex[:8]}"
    upgrade(database_url, name, package_revisions()[-2])
    yield name
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def behind_line(schema: str) -> str:
    before, head = package_revisions()[-2:]
    return (
        f"pgjobs: error: schema {schema!r} is at revision {before}, pgjobs needs {head}: "
        f"run `pgjobs migrate --schema {schema}`"
    )


def test_the_packaged_revisions_are_alembics() -> None:
    from alembic.script import ScriptDirectory

    from pgjobs.migrate import alembic_config

    walked = ScriptDirectory.from_config(alembic_config("pgjobs")).walk_revisions()
    assert package_revisions() == tuple(reversed([script.revision for script in walked]))
    assert package_revisions()[-1] == head_revision()


def test_work_on_a_schema_behind_exits_with_one_line_before_starting(
    capsys: pytest.CaptureFixture[str], database_url: str, schema_behind: str
) -> None:
    result = run_cli(capsys, database_url, schema_behind, "work", "--app", WORKER_APP)

    assert the_line(result) == behind_line(schema_behind)
    assert "worker started" not in result.out + result.err


@pytest.mark.parametrize("command", [["list"], ["stats"], ["show", "1"], ["queues"], ["workers"]])
def test_inspection_commands_on_a_schema_behind_say_to_migrate(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    schema_behind: str,
    command: list[str],
) -> None:
    result = run_cli(capsys, database_url, schema_behind, *command)

    assert the_line(result) == behind_line(schema_behind)


def test_a_schema_behind_raises_schema_behind_error_a_kind_of_not_migrated(
    database_url: str, schema_behind: str
) -> None:
    behind = App(database_url, schema=schema_behind)
    try:
        with pytest.raises(SchemaBehindError) as raised:
            require_current_schema(behind)
    finally:
        behind.close()

    assert isinstance(raised.value, SchemaNotMigratedError)
    assert (raised.value.revision, raised.value.needed) == package_revisions()[-2:]


def test_a_current_schema_and_one_from_a_newer_pgjobs_pass_the_check(
    app: App, conn: Connection, schema: str
) -> None:
    check_schema_revision(conn, app.data.inspect)
    # a newer pgjobs migrated it (a rolling deploy): this one keeps working
    version_table = sql.Identifier(schema, "alembic_version")
    conn.execute(sql.SQL("UPDATE {} SET version_num = 'f00d'").format(version_table))
    check_schema_revision(conn, app.data.inspect)


def test_the_check_of_a_missing_schema_leaves_the_callers_transaction_usable(
    database_url: str, conn: Connection
) -> None:
    missing = App(database_url, schema=f"never_{uuid.uuid4().hex[:8]}")
    with pytest.raises(SchemaNotMigratedError, match="is not migrated"):
        check_schema_revision(conn, missing.data.inspect)
    still_usable(conn)


# --- 6. tracebacks that are one line now ----------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ('{"n": ' + "1" * 5000 + "}", "--payload holds an integer of more than"),
        ("[" * 10_000 + "]" * 10_000, "--payload is nested too deeply"),
    ],
)
def test_payload_python_cannot_read_is_one_line(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str, payload: str, complaint: str
) -> None:
    result = run_cli(capsys, database_url, schema, "enqueue", "noop", "--payload", payload)

    assert complaint in the_line(result)


def test_stats_watch_past_what_a_sleep_takes_is_one_line(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    result = run_cli(capsys, database_url, schema, "stats", "--watch", "1e20")

    assert "--watch must be at most" in the_line(result)


def test_schedules_of_an_app_with_a_bad_schedule_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    schema: str,
) -> None:
    module = f"far_schedule_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from datetime import timedelta

            import pgjobs

            app = pgjobs.App()

            @app.periodic(every=timedelta(days=999999999))
            @app.task(name="report")
            def report() -> None: ...
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    result = run_cli(capsys, database_url, schema, "schedules", "--app", f"{module}:app")

    assert "InvalidScheduleError" in the_line(result)
    assert "every must be at most" in result.err


def test_payload_nested_too_deeply_to_encode_is_a_payload_error(app: App, conn: Connection) -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(1000):
        inner["a"] = {}
        inner = inner["a"]

    with pytest.raises(PayloadNotSerializableError, match=r"argument .deep. .* nested too deeply"):
        app.enqueue(conn, "noop", {"deep": nested})
    still_usable(conn)


def test_schema_that_is_not_a_string_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="schema name must be a string, got 5"):
        App(UNREACHABLE_URL, schema=5)  # type: ignore[arg-type]


def test_first_enqueue_async_on_a_sync_connection_without_greenlet_is_the_type_error(
    database_url: str,
) -> None:
    # SQLAlchemy's asyncio module cannot be imported without greenlet (an optional
    # dependency); importing it failed once, then worked half-initialised.
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["greenlet"] = None  # as if it were not installed
        import psycopg, pgjobs

        app = pgjobs.App({database_url!r}, schema="unused")

        async def main():
            with psycopg.connect({database_url!r}) as conn:
                for _ in range(2):
                    try:
                        await app.enqueue_async(conn, "noop", {{}})
                    except Exception as error:
                        print(type(error).__name__)

        asyncio.run(main())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )

    assert run.stdout.split() == ["TypeError", "TypeError"], run.stderr


# --- 7. smaller ones ------------------------------------------------------------------------

HOSTILE_TASK = "evil\x1b[31mred\nsecond line\x9b2J"
HOSTILE_ARGUMENT = "\x1b]0;retitled\x07\u202eevil"


@pytest.fixture
def hostile_job(app: App) -> int:
    return app.enqueue(None, HOSTILE_TASK, {"text": HOSTILE_ARGUMENT})


@pytest.mark.parametrize("command", [["list", "--wide"], ["show"]])
def test_control_characters_of_job_data_are_shown_escaped(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    schema: str,
    hostile_job: int,
    command: list[str],
) -> None:
    if command == ["show"]:
        command = ["show", str(hostile_job)]
    result = run_cli(capsys, database_url, schema, *command)

    assert result.code == 0, result.err
    for raw in ("\x1b", "\x9b", "\x07", "\u202e"):
        assert raw not in result.out
    assert "evil\\x1b[31mred\\nsecond line\\x9b2J" in result.out


@pytest.mark.parametrize("command", [["list", "--json"], ["show", "--json"]])
def test_json_output_keeps_job_data_exact(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    schema: str,
    hostile_job: int,
    command: list[str],
) -> None:
    if command[0] == "show":
        command = ["show", str(hostile_job), "--json"]
    result = run_cli(capsys, database_url, schema, *command)

    document = json.loads(result.out)
    shown = document[0] if isinstance(document, list) else document
    assert (shown["task"], shown["payload"]) == (HOSTILE_TASK, {"text": HOSTILE_ARGUMENT})


def test_retention_naming_a_state_twice_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(
        capsys,
        UNREACHABLE_URL,
        "s",
        "work",
        "--app",
        NO_APP,
        "--retention",
        "completed=1d,completed=2d",
    )

    assert "--retention gives completed more than once" in the_line(result)


def test_empty_database_url_is_refused_rather_than_replaced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, the empty option fell back to the environment's URL (here unreachable).
    monkeypatch.setenv("PGJOBS_DATABASE_URL", UNREACHABLE_URL)
    with pytest.raises(SystemExit) as exited:
        main(["list", "--database-url", "", "--schema", "s"])

    assert exited.value.code == 1
    assert "the database URL is empty" in capsys.readouterr().err


def test_app_with_an_empty_database_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="the database URL is empty"):
        App("  ")


def test_resuming_a_queue_never_seen_records_nothing(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str, observer: Connection
) -> None:
    result = run_cli(capsys, database_url, schema, "queue", "resume", "never_seen")

    assert (result.code, result.out) == (0, "queue 'never_seen' is not paused\n")
    queues = sql.SQL("SELECT name FROM {}").format(sql.Identifier(schema, "queues"))
    assert observer.execute(queues).fetchall() == []


def test_resuming_a_paused_queue_still_resumes_it(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    run_cli(capsys, database_url, schema, "queue", "pause", "mail")

    result = run_cli(capsys, database_url, schema, "queue", "resume", "mail")

    assert result.out == "resumed queue 'mail'\n"


@pytest.mark.parametrize("name", ["", "   ", "a\x00b"])
def test_task_name_given_empty_is_refused(app: App, name: str) -> None:
    with pytest.raises(InvalidTaskError, match="task name must be a non-empty string"):

        @app.task(name=name)
        def work() -> None: ...

    assert app.tasks == {}


@pytest.mark.parametrize(
    ("items", "complaint"),
    [
        (["noop"], "each item of enqueue_many must be a tuple"),
        ([("noop",)], "each item of enqueue_many must be a tuple"),
        ([42], "each item of enqueue_many must be a tuple"),
        ([("noop", {}, ["delay"])], "options of an enqueue_many item must be a dict"),
        ([("noop", {}, {"dealy": 5})], "unknown enqueue options \\['dealy'\\]"),
    ],
)
def test_enqueue_many_item_of_the_wrong_shape_says_what_an_item_is(
    app: App, conn: Connection, items: list[Any], complaint: str
) -> None:
    with pytest.raises(InvalidJobError, match=complaint):
        app.enqueue_many(conn, items)
    still_usable(conn)


def test_app_reference_to_a_missing_attribute_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, UNREACHABLE_URL, "s", "work", "--app", "tests.worker_app:missing")

    assert the_line(result) == (
        "pgjobs: error: --app: module 'tests.worker_app' has no attribute 'missing'"
    )


def demo_job(state: JobState, *, started: bool) -> Job:
    now = datetime.now(timezone.utc)
    return Job(
        id=1, queue="demo", task="t", payload={}, state=state, priority=0, attempts=1,
        max_attempts=3, run_at=now, created_at=now, started_at=now,
        finished_at=None, heartbeat_at=now, worker_id="w", unique_key=None, errors=[],
        began_at=now if started else None,
    )  # fmt: skip


def test_demo_counts_a_claimed_job_not_yet_started_apart_from_running_ones() -> None:
    now = datetime.now(timezone.utc)
    held = [demo_job(JobState.RUNNING, started=True) for _ in range(4)]
    held += [demo_job(JobState.RUNNING, started=False) for _ in range(6)]

    snapshot = Snapshot.of(held, now)

    assert (snapshot.counts["running"], snapshot.counts["claimed"]) == (4, 6)
    assert display_row(held[0], now) == "running"
