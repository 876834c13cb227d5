"""Automatic retention: the maintenance leader drops the history's partitions whose whole
day is past their state's retention, one worker at a time even when two think they lead."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App, ConfigurationError
from pgjobs.cli.common import parse_duration
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.retention import DAY, Retention, RetentionPolicy
from tests.helpers import cancelled, completed, failed, job_ids, make_job, run_cli, running

Capsys = pytest.CaptureFixture[str]
HOUR = 3600.0


@pytest.fixture
def connection(database_url: str) -> Iterator[ResilientConnection]:
    """A maintenance connection, as the leader's retention shares one."""
    opened = ResilientConnection(database_url, "maintenance")
    yield opened
    opened.close()


@pytest.fixture
def retention(app: App, connection: ResilientConnection) -> Retention:
    """The service with the default policy, run by hand."""
    return Retention(connection, app.data.maintenance, RetentionPolicy(), history=app.data.history)


def partitions(app: App, observer: psycopg.Connection[Any]) -> set[tuple[str, date]]:
    """(state, day) of each partition of the history."""
    return {(p.state, p.day) for p in app.data.history.partitions(observer)}


def days_ago(days: int) -> date:
    return (datetime.now(timezone.utc) - timedelta(days=days)).date()


def test_a_pass_drops_the_whole_days_past_their_states_retention(
    app: App, observer: psycopg.Connection[Any], schema: str, retention: Retention
) -> None:
    # Retention drops a day's partition once the whole day is past it: a job finished
    # three days ago is gone with a day's retention, one finished an hour ago is not.
    kept = [
        make_job(app, observer, **completed(finished_ago=HOUR)),
        make_job(app, observer, **cancelled(finished_ago=HOUR)),
        make_job(app, observer, **failed(finished_ago=6 * DAY)),
        make_job(app, observer, **running()),
        make_job(app, observer),
    ]
    make_job(app, observer, **completed(finished_ago=3 * DAY))
    make_job(app, observer, **completed(finished_ago=3 * DAY))
    make_job(app, observer, **cancelled(finished_ago=3 * DAY))
    make_job(app, observer, **failed(finished_ago=9 * DAY))
    assert ("completed", days_ago(3)) in partitions(app, observer)

    deleted = retention.run_once()

    assert deleted == {"completed": 2, "failed": 1, "cancelled": 1}
    assert job_ids(observer, schema) == kept
    left = partitions(app, observer)
    assert ("completed", days_ago(3)) not in left and ("failed", days_ago(9)) not in left
    assert ("failed", days_ago(6)) in left
    # Partitions for today and the days ahead, so that completions never make one.
    for state in ("completed", "failed", "cancelled"):
        assert {(state, days_ago(-ahead)) for ahead in range(3)} <= left


def test_a_state_can_be_kept_and_retention_turned_off(
    app: App, observer: psycopg.Connection[Any], schema: str, connection: ResilientConnection
) -> None:
    old_failure = make_job(app, observer, **failed(finished_ago=30 * DAY))
    make_job(app, observer, **completed(finished_ago=30 * DAY))
    policy = RetentionPolicy.parse("failed=off,completed=1h", parse_duration)
    service = Retention(connection, app.data.maintenance, policy, history=app.data.history)
    off = Retention(connection, app.data.maintenance, None, history=app.data.history)

    assert off.run_once() == {}
    assert len(job_ids(observer, schema)) == 2
    assert service.run_once() == {"completed": 1, "cancelled": 0}
    assert job_ids(observer, schema) == [old_failure]


def test_a_pass_moves_finished_rows_left_in_the_live_table_in_batches(
    app: App, observer: psycopg.Connection[Any], schema: str, connection: ResilientConnection
) -> None:
    # given: finished rows in jobs_live, as a table migrated from before 0012 holds them
    live = sql.Identifier(schema, "jobs_live")
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (task, state, finished_at)"
            " SELECT 't', 'completed', now() - g * interval '1 minute'"
            " FROM generate_series(1, 5) AS g"
        ).format(live)
    )
    service = Retention(
        connection, app.data.maintenance, None, history=app.data.history, batch_size=2
    )

    service.run_once()

    history = sql.Identifier(schema, "jobs_history")
    count = "SELECT count(*) FROM {}"
    assert observer.execute(sql.SQL(count).format(live)).fetchone() == (0,)
    assert observer.execute(sql.SQL(count).format(history)).fetchone() == (5,)


def test_one_worker_at_a_time_makes_a_pass(
    app: App, observer: psycopg.Connection[Any], schema: str, retention: Retention
) -> None:
    old = make_job(app, observer, **completed(finished_ago=3 * DAY))
    # Another worker's pass holds the turn.
    assert app.data.maintenance.try_maintenance_lock(observer, "retention")

    assert retention.run_once() is None
    assert job_ids(observer, schema) == [old]

    app.data.maintenance.release_maintenance_lock(observer, "retention")
    assert retention.run_once() == {"completed": 1, "failed": 0, "cancelled": 0}


def test_the_policy_reads_state_duration_pairs() -> None:
    assert RetentionPolicy.parse("off", parse_duration) is None
    assert RetentionPolicy.parse("failed=30d", parse_duration) == RetentionPolicy(
        completed=DAY, failed=30 * DAY, cancelled=DAY
    )
    assert RetentionPolicy().by_state() == [
        ("completed", DAY),
        ("failed", 7 * DAY),
        ("cancelled", DAY),
    ]
    for bad in ("running=1d", "failed", "failed=soon"):
        with pytest.raises(ConfigurationError):
            RetentionPolicy.parse(bad, parse_duration)


def test_a_bad_retention_option_is_one_line(capsys: Capsys, database_url: str, schema: str) -> None:
    result = run_cli(
        capsys, database_url, schema, "work", "--app", "x:y", "--retention", "running=1d"
    )

    assert result.code == 1
    assert result.err.startswith("pgjobs: error: --retention takes 'off' or STATE=DURATION")
    assert len(result.err.splitlines()) == 1
