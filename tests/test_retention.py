"""Automatic retention: the maintenance leader deletes finished jobs past their retention,
one worker at a time even when two think they lead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

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
    return Retention(connection, app.data.maintenance, RetentionPolicy())


def test_a_pass_deletes_only_jobs_past_their_states_retention(
    app: App, observer: psycopg.Connection[Any], schema: str, retention: Retention
) -> None:
    kept = [
        make_job(app, observer, **completed(finished_ago=DAY - HOUR)),
        make_job(app, observer, **cancelled(finished_ago=DAY - HOUR)),
        make_job(app, observer, **failed(finished_ago=7 * DAY - HOUR)),
        make_job(app, observer, **running()),
        make_job(app, observer),
    ]
    make_job(app, observer, **completed(finished_ago=DAY + HOUR))
    make_job(app, observer, **cancelled(finished_ago=DAY + HOUR))
    make_job(app, observer, **failed(finished_ago=7 * DAY + HOUR))

    deleted = retention.run_once()

    assert deleted == {"completed": 1, "failed": 1, "cancelled": 1}
    assert job_ids(observer, schema) == kept


def test_a_state_can_be_kept_and_retention_turned_off(
    app: App, observer: psycopg.Connection[Any], schema: str, connection: ResilientConnection
) -> None:
    old_failure = make_job(app, observer, **failed(finished_ago=30 * DAY))
    make_job(app, observer, **completed(finished_ago=30 * DAY))
    policy = RetentionPolicy.parse("failed=off,completed=1h", parse_duration)
    service = Retention(connection, app.data.maintenance, policy)
    off = Retention(connection, app.data.maintenance, None)

    assert off.run_once() == {}
    assert len(job_ids(observer, schema)) == 2
    assert service.run_once() == {"completed": 1, "cancelled": 0}
    assert job_ids(observer, schema) == [old_failure]


def test_a_pass_deletes_in_batches_until_done(
    app: App, observer: psycopg.Connection[Any], schema: str, connection: ResilientConnection
) -> None:
    for _ in range(5):
        make_job(app, observer, **completed(finished_ago=2 * DAY))
    service = Retention(connection, app.data.maintenance, RetentionPolicy(), batch_size=2)

    assert service.run_once() == {"completed": 5, "failed": 0, "cancelled": 0}
    assert job_ids(observer, schema) == []


def test_one_worker_at_a_time_makes_a_pass(
    app: App, observer: psycopg.Connection[Any], schema: str, retention: Retention
) -> None:
    old = make_job(app, observer, **completed(finished_ago=2 * DAY))
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
