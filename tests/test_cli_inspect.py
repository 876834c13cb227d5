"""`pgjobs stats`, `list` and `show`: what an operator sees of the queue."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgjobs import App
from pgjobs.cli.output import format_time
from tests.helpers import (
    ERRORS,
    Result,
    ago,
    cancelled,
    completed,
    failed,
    make_job,
    run_cli,
    running,
)
from tests.helpers import job as job_row

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def cli(capsys: Capsys, database_url: str, schema: str) -> Any:
    """Run a pgjobs command against the test's schema."""

    def run(*args: str) -> Result:
        return run_cli(capsys, database_url, schema, *args)

    return run


@pytest.fixture
def mixed_jobs(app: App, observer: psycopg.Connection[Any]) -> dict[str, int]:
    """Two queues with jobs in every state."""
    return {
        "waiting": make_job(app, observer, queue="default", run_at=ago(120)),
        "delayed": make_job(app, observer, queue="default", run_at=ago(-3600)),
        "running": make_job(app, observer, queue="default", **running()),
        "completed_recent": make_job(app, observer, queue="default", **completed(10)),
        "completed_old": make_job(app, observer, queue="default", **completed(240)),
        "mail_failed": make_job(app, observer, queue="mail", task="email.send", **failed(30)),
        "mail_cancelled": make_job(app, observer, queue="mail", task="email.send", **cancelled()),
        "mail_waiting": make_job(app, observer, queue="mail", task="email.send", run_at=ago(5)),
    }


def test_stats_json_counts_jobs_by_queue_and_state(cli: Any, mixed_jobs: dict[str, int]) -> None:
    result = cli("stats", "--json")

    assert result.code == 0, result.err
    stats = json.loads(result.out)
    by_queue = {q["queue"]: q for q in stats["queues"]}
    assert by_queue["default"]["counts"] == {
        "available": 2,
        "running": 1,
        "completed": 2,
        "failed": 0,
        "cancelled": 0,
        "blocked": 0,
    }
    assert by_queue["mail"]["counts"] == {
        "available": 1,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 1,
        "blocked": 0,
    }
    assert stats["totals"]["total"] == 8


def test_stats_reports_oldest_waiting_age_ignoring_delayed_jobs(
    cli: Any, mixed_jobs: dict[str, int]
) -> None:
    stats = json.loads(cli("stats", "--json").out)

    by_queue = {q["queue"]: q for q in stats["queues"]}
    assert 119 < by_queue["default"]["oldest_waiting_seconds"] < 180
    assert 4 < by_queue["mail"]["oldest_waiting_seconds"] < 60
    assert (
        stats["totals"]["oldest_waiting_seconds"] == by_queue["default"]["oldest_waiting_seconds"]
    )


def test_stats_reports_recent_throughput_of_completed_and_failed_jobs(
    cli: Any, mixed_jobs: dict[str, int]
) -> None:
    stats = json.loads(cli("stats", "--json").out)

    by_queue = {q["queue"]: q for q in stats["queues"]}
    assert (by_queue["default"]["finished_last_1m"], by_queue["default"]["finished_last_5m"]) == (
        1,
        2,
    )
    assert (by_queue["mail"]["finished_last_1m"], by_queue["mail"]["finished_last_5m"]) == (1, 1)
    assert stats["throughput"]["finished_last_5m"] == 3
    assert stats["throughput"]["jobs_per_second_5m"] == pytest.approx(3 / 300)


def test_stats_table_has_a_row_per_queue_and_a_total(cli: Any, mixed_jobs: dict[str, int]) -> None:
    result = cli("stats")

    assert result.code == 0, result.err
    rows = {line.split()[0]: line.split()[1:6] for line in result.out.splitlines() if line}
    assert rows["default"] == ["2", "1", "2", "0", "0"]
    assert rows["mail"] == ["1", "0", "0", "1", "1"]
    assert rows["total"] == ["3", "1", "2", "1", "1"]
    assert "throughput: 2 jobs finished in the last minute" in result.out
    assert "\x1b[" not in result.out
    assert all(line == line.rstrip() for line in result.out.splitlines())


def test_stats_of_an_empty_queue_says_so(cli: Any, schema: str) -> None:
    result = cli("stats")

    assert result.code == 0
    assert result.out.strip() == f"no jobs in schema {schema!r}"
    assert json.loads(cli("stats", "--json").out)["queues"] == []


def test_list_shows_newest_jobs_first_up_to_the_limit(cli: Any, mixed_jobs: dict[str, int]) -> None:
    jobs = json.loads(cli("list", "--json", "--limit", "3").out)

    assert [j["id"] for j in jobs] == sorted(mixed_jobs.values(), reverse=True)[:3]


def test_list_filters_by_state(cli: Any, mixed_jobs: dict[str, int]) -> None:
    jobs = json.loads(cli("list", "--json", "--state", "failed", "--state", "running").out)

    assert {j["id"] for j in jobs} == {mixed_jobs["mail_failed"], mixed_jobs["running"]}


def test_list_filters_by_queue_and_task_together(
    cli: Any, app: App, observer: psycopg.Connection[Any], mixed_jobs: dict[str, int]
) -> None:
    other_task = make_job(app, observer, queue="mail", task="email.digest")

    by_queue = json.loads(cli("list", "--json", "--queue", "mail").out)
    by_both = json.loads(cli("list", "--json", "--queue", "mail", "--task", "email.digest").out)

    assert len(by_queue) == 4
    assert [j["id"] for j in by_both] == [other_task]


def test_list_table_shows_attempts_and_first_line_of_last_error(
    cli: Any, mixed_jobs: dict[str, int]
) -> None:
    result = cli("list", "--state", "failed")

    assert result.code == 0, result.err
    [header, _, row] = result.out.splitlines()
    assert header.split()[:6] == ["id", "queue", "task", "state", "priority", "attempts"]
    assert row.split()[:6] == [
        str(mixed_jobs["mail_failed"]),
        "mail",
        "email.send",
        "failed",
        "0",
        "2/2",
    ]
    assert row.endswith("ValueError: second")


def test_list_fits_80_columns_shortening_only_long_text(
    cli: Any, app: App, observer: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    long_worker = {"worker_id": "worker-7f9c2d.eu-west-1.compute.internal:123456:abcdef"}
    make_job(app, observer, task="reports.build_monthly_sales_summary", **failed(3 * 86400))
    make_job(app, observer, task="email.send", **{**completed(40), **long_worker})
    make_job(app, observer, **cancelled(5))
    make_job(app, observer, **running())
    make_job(app, observer, run_at=ago(-600))
    monkeypatch.setenv("COLUMNS", "80")

    result = cli("list")

    assert result.code == 0, result.err
    [header, rule, *rows] = result.out.splitlines()
    assert header.split() == ["id", "task", "state", "attempts", "when", "worker", "last", "error"]
    assert len(rule) <= 80 and all(len(row) <= 80 for row in rows)
    states = ["available", "running", "cancelled", "completed", "failed"]
    assert [row.split()[2] for row in rows] == states  # one line per job, none cut short
    assert "reports.bu" in rows[-1] and "…" in rows[-1]
    assert "in 9m" in rows[0] and "3d 0h ago" in rows[-1]


def test_list_wide_shows_when_a_job_finished_and_which_worker_ran_it(
    cli: Any, app: App, observer: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    done = make_job(app, observer, **{**completed(), "worker_id": "host-c:99:0a1b2c"})
    finished_at = job_row(observer, app.schema, done)["finished_at"]
    monkeypatch.setenv("COLUMNS", "80")

    result = cli("list", "--wide")

    [header, _, row] = result.out.splitlines()
    assert header.split() == [
        "id", "queue", "task", "state", "priority", "attempts", "when", "created", "finished",
        "worker", "last", "error",
    ]  # fmt: skip
    assert format_time(finished_at) in row
    assert "host-c:99:0a1b2c" in row


def test_list_json_holds_the_same_jobs_as_show_json(cli: Any, mixed_jobs: dict[str, int]) -> None:
    listed = json.loads(cli("list", "--json", "--state", "failed").out)

    shown = json.loads(cli("show", str(mixed_jobs["mail_failed"]), "--json").out)
    assert listed == [shown]


def test_list_rejects_an_unknown_state_in_one_line(cli: Any) -> None:
    result = cli("list", "--state", "done")

    assert result.code == 1
    assert result.err == (
        "pgjobs: error: unknown state 'done'; "
        "choose from available, running, completed, failed, cancelled, blocked\n"
    )


def test_show_prints_the_job_and_its_attempt_history(cli: Any, mixed_jobs: dict[str, int]) -> None:
    result = cli("show", str(mixed_jobs["mail_failed"]))

    assert result.code == 0, result.err
    out = result.out
    assert f"id            {mixed_jobs['mail_failed']}" in out
    assert "attempts      2 of 2" in out
    assert 'payload       {"n": 1}' in out
    assert "attempt history (2)" in out
    assert "2024-05-01 12:00:00+00:00  host-a:41  ValueError: first [boom]" in out
    assert "2024-05-01 12:00:05+00:00  host-b:7   ValueError: second" in out
    assert "traceback of attempt 1:\n  Traceback (most recent call last):" in out
    assert '    File "t.py", line 3\n  ValueError: first [boom]' in out


def test_show_json_is_the_whole_row(cli: Any, mixed_jobs: dict[str, int]) -> None:
    job = json.loads(cli("show", str(mixed_jobs["mail_failed"]), "--json").out)

    assert job["id"] == mixed_jobs["mail_failed"]
    assert (job["state"], job["attempts"], job["max_attempts"]) == ("failed", 2, 2)
    assert job["payload"] == {"n": 1}
    assert job["errors"] == ERRORS
    assert job["finished_at"].endswith("+00:00")
    assert {"run_at", "created_at", "started_at", "heartbeat_at", "worker_id", "unique_key"} <= (
        job.keys()
    )


def test_show_of_a_job_without_failures_says_so(cli: Any, mixed_jobs: dict[str, int]) -> None:
    result = cli("show", str(mixed_jobs["waiting"]))

    assert result.out.endswith("\nno failed attempts\n")


def test_show_of_an_unknown_id_is_a_one_line_error(cli: Any) -> None:
    result = cli("show", "123")

    assert (result.code, result.out) == (1, "")
    assert result.err == "pgjobs: error: no job with id 123\n"


def test_inspection_of_an_unmigrated_schema_is_a_one_line_error(
    capsys: Capsys, database_url: str
) -> None:
    result = run_cli(capsys, database_url, "never_migrated", "stats")

    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "pgjobs migrate" in result.err
