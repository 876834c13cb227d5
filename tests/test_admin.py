"""`pgjobs retry`, `cancel` and `prune`, and the `pgjobs.admin` functions behind them."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgjobs import App, ConfigurationError, JobNotFoundError
from pgjobs.admin import cancel_jobs, prune_jobs, retry_jobs
from pgjobs.cli.common import parse_duration
from pgjobs.data.sql import notify_channel
from pgjobs.errors import JobStateError
from tests.helpers import (
    Result,
    ago,
    cancelled,
    completed,
    failed,
    job,
    job_ids,
    make_job,
    run_cli,
    running,
)

Capsys = pytest.CaptureFixture[str]
DAY = 86400


@pytest.fixture
def cli(capsys: Capsys, database_url: str, schema: str) -> Any:
    """Run a pgjobs command against the test's schema."""

    def run(*args: str) -> Result:
        return run_cli(capsys, database_url, schema, *args)

    return run


# retry


def test_retry_makes_a_failed_job_available_with_one_more_attempt(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    job_id = make_job(app, observer, **failed())

    result = cli("retry", str(job_id))

    assert (result.code, result.out) == (0, f"retried job {job_id}\n"), result.err
    retried = job(observer, schema, job_id)
    assert retried is not None
    assert retried["state"] == "available"
    assert (retried["attempts"], retried["max_attempts"]) == (2, 3)
    assert retried["finished_at"] is None
    assert retried["run_at"] <= ago(-1)
    assert len(retried["errors"]) == 2


def test_retry_keeps_max_attempts_when_attempts_are_left(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    job_id = make_job(app, observer, **cancelled(), attempts=1, max_attempts=5)

    assert retry_jobs(app, [job_id]) == [job_id]

    retried = job(observer, schema, job_id)
    assert retried is not None
    assert (retried["state"], retried["max_attempts"]) == ("available", 5)


def test_retry_wakes_listening_workers_once_per_queue(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    ids = [
        make_job(app, observer, queue="mail", **failed()),
        make_job(app, observer, queue="mail", **failed()),
        make_job(app, observer, queue="reports", **cancelled()),
    ]
    observer.execute(
        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(notify_channel(schema)))
    )

    assert cli("retry", *map(str, ids)).code == 0

    woken = [n.payload for n in observer.notifies(timeout=5, stop_after=2)]
    assert sorted(woken) == ["mail", "reports"]
    assert list(observer.notifies(timeout=0.2)) == []


def test_retry_of_a_completed_job_refuses_and_changes_nothing(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    job_id = make_job(app, observer, **completed())
    before = job(observer, schema, job_id)

    result = cli("retry", str(job_id))

    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"pgjobs: error: job {job_id} is completed; only failed or cancelled jobs can be retried\n"
    )
    assert job(observer, schema, job_id) == before


def test_retry_is_all_or_nothing(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    good = make_job(app, observer, **failed())
    waiting = make_job(app, observer)

    result = cli("retry", str(good), str(waiting))

    assert result.code == 1
    assert result.err.splitlines() == [
        f"pgjobs: error: job {waiting} is available; only failed or cancelled jobs can be retried",
        "pgjobs: error: no job was retried: the change is all or nothing",
    ]
    still_failed = job(observer, schema, good)
    assert still_failed is not None and still_failed["state"] == "failed"


def test_retry_of_unknown_ids_names_them(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    good = make_job(app, observer, **failed())

    result = cli("retry", str(good), "998", "999")

    assert result.code == 1
    assert result.err == "pgjobs: error: no jobs with ids 998, 999\n"
    still_failed = job(observer, schema, good)
    assert still_failed is not None and still_failed["state"] == "failed"


def test_retry_refuses_to_give_a_unique_key_a_second_unfinished_job(
    app: App, observer: psycopg.Connection[Any]
) -> None:
    old = make_job(app, observer, **failed(), unique_key="report:7")
    app.enqueue(None, "t", {}, unique_key="report:7")

    with pytest.raises(JobStateError, match="already holds its unique_key 'report:7'"):
        retry_jobs(app, [old])


# cancel


def test_cancel_stops_available_and_running_jobs(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    waiting = make_job(app, observer)
    busy = make_job(app, observer, **running())

    result = cli("cancel", str(waiting), str(busy))

    assert (result.code, result.out) == (0, f"cancelled 2 jobs: {waiting}, {busy}\n"), result.err
    for job_id in (waiting, busy):
        row = job(observer, schema, job_id)
        assert row is not None
        assert row["state"] == "cancelled"
        assert row["finished_at"] is not None
        assert row["worker_id"] is None


def test_cancel_of_a_finished_job_refuses_and_changes_nothing(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    done = make_job(app, observer, **completed())
    waiting = make_job(app, observer)

    result = cli("cancel", str(waiting), str(done))

    assert result.code == 1
    assert result.err.splitlines()[0] == (
        f"pgjobs: error: job {done} is completed; "
        "only available, running or blocked jobs can be cancelled"
    )
    still_waiting = job(observer, schema, waiting)
    assert still_waiting is not None and still_waiting["state"] == "available"


def test_cancel_of_an_unknown_id_is_a_one_line_error(app: App, cli: Any) -> None:
    result = cli("cancel", "4242")

    assert (result.code, result.err) == (1, "pgjobs: error: no job with id 4242\n")
    with pytest.raises(JobNotFoundError):
        cancel_jobs(app, [4242])


# prune


def test_prune_deletes_only_old_finished_jobs(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    old = [
        make_job(app, observer, **completed(8 * DAY)),
        make_job(app, observer, **failed(8 * DAY)),
        make_job(app, observer, **cancelled(8 * DAY)),
    ]
    kept = [
        make_job(app, observer, **completed(6 * DAY)),
        make_job(app, observer, run_at=ago(30 * DAY)),
        make_job(app, observer, **{**running(), "started_at": ago(30 * DAY)}),
    ]

    result = cli("prune")

    assert result.code == 0, result.err
    assert result.out.startswith("deleted 3 jobs ")
    assert job_ids(observer, schema) == kept
    assert not set(old) & set(job_ids(observer, schema))


def test_prune_honours_older_than_and_state(
    cli: Any, app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    failed_hours_ago = make_job(app, observer, **failed(3 * 3600))
    completed_hours_ago = make_job(app, observer, **completed(3 * 3600))
    completed_just_now = make_job(app, observer, **completed(60))

    result = cli("prune", "--older-than", "2h", "--state", "completed")

    assert result.out.startswith("deleted 1 job (completed) "), result.err
    assert job_ids(observer, schema) == [failed_hours_ago, completed_just_now]
    assert completed_hours_ago not in job_ids(observer, schema)


def test_prune_deletes_in_batches_until_done(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    for _ in range(5):
        make_job(app, observer, **completed(2 * DAY))

    assert prune_jobs(app, DAY, batch_size=2) == 5
    assert job_ids(observer, schema) == []


def test_prune_refuses_unfinished_states(cli: Any) -> None:
    result = cli("prune", "--state", "running")

    assert result.code == 1
    assert result.err == (
        "pgjobs: error: only finished jobs can be pruned; "
        "choose states from completed, failed, cancelled\n"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5h", 5400)],
)
def test_older_than_accepts_seconds_and_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "7x", "-5", "", "7 days", "1H"])
def test_older_than_errors_are_one_line(cli: Any, text: str) -> None:
    result = cli("prune", "--older-than", text)

    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"pgjobs: error: --older-than takes seconds or a duration like 7d, 12h or 30m, "
        f"not {text!r}\n"
    )


def test_prune_refuses_a_negative_retention(app: App) -> None:
    with pytest.raises(ConfigurationError):
        prune_jobs(app, -1)
