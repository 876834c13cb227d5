"""Pause and resume (`pgjobs queue pause|resume`), and `pgjobs queues`."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App, InvalidJobError
from pgjobs.data.function_plans import explain_claim
from pgjobs.data.sql import notify_channel
from pgjobs.queue_control import pause_queue, resume_queue, set_queue_limit
from pgjobs.types import ClaimedJob
from tests.helpers import (
    StartWorker,
    completed,
    failed,
    job,
    make_job,
    run_cli,
    runs,
    stays_true,
    wait_for_job,
)

Capsys = pytest.CaptureFixture[str]


def claim(app: App, observer: psycopg.Connection[Any], queue: str | None) -> list[ClaimedJob]:
    return app.data.claims.claim(observer, limit=10, queue=queue, worker_id="w")[0]


def test_a_paused_queue_is_skipped_by_every_claim_and_resumed_again(
    app: App, observer: psycopg.Connection[Any]
) -> None:
    paused = app.enqueue(None, "t", {}, queue="mail")
    other = app.enqueue(None, "t", {}, queue="default")
    pause_queue(app, "mail")

    assert claim(app, observer, "mail") == []
    assert [job.id for job in claim(app, observer, None)] == [other]

    resume_queue(app, "mail")
    assert [job.id for job in claim(app, observer, None)] == [paused]


def test_enqueue_into_a_paused_queue_still_works(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    pause_queue(app, "mail")

    job_id = app.enqueue(None, "t", {}, queue="mail")

    assert job(observer, schema, job_id)["state"] == "available"


def test_resume_wakes_the_workers_of_the_queue(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    observer.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(schema))))
    pause_queue(app, "mail")
    assert list(observer.notifies(timeout=0.2)) == []

    resume_queue(app, "mail")

    [notify] = list(observer.notifies(timeout=2, stop_after=1))
    assert notify.payload == "mail"


def test_a_queue_name_is_checked_like_at_enqueue(app: App) -> None:
    with pytest.raises(InvalidJobError):
        pause_queue(app, "")
    with pytest.raises(InvalidJobError):
        resume_queue(app, "x" * 201)


def test_the_claim_still_uses_the_fetch_indexes(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    jobs = sql.Identifier(schema, "jobs_live")
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (queue, task) SELECT 'q' || (g % 10), 't'"
            " FROM generate_series(1, 20000) AS g"
        ).format(jobs)
    )
    observer.execute(sql.SQL("ANALYZE {}").format(jobs))
    pause_queue(app, "q1")
    any_queue = explain(observer, app.schema, None)
    paused = explain(observer, app.schema, "q1")

    assert "Index Scan using jobs_fetch_any_queue_idx" in any_queue, any_queue
    assert "hashed SubPlan" in any_queue, any_queue
    # A paused queue is not scanned at all: a one-time check comes first.
    assert "One-Time Filter" in paused, paused
    assert "(never executed)" in paused, paused


def explain(observer: psycopg.Connection[Any], schema: str, queue: str | None) -> str:
    """The plan of a claim as `claim_jobs` runs it, rolled back so that it claims nothing."""
    rows = explain_claim(observer, schema, limit=10, begin=2, queue=queue)
    return "\n".join(row[0] for row in rows)


def test_queues_lists_every_queue_with_its_settings(
    app: App, observer: psycopg.Connection[Any], capsys: Capsys, database_url: str, schema: str
) -> None:
    app.enqueue(None, "t", {}, queue="mail")
    make_job(app, observer, queue="mail", **failed())
    make_job(app, observer, queue="default", **completed())
    pause_queue(app, "mail")
    set_queue_limit(app, "mail", 100)
    pause_queue(app, "empty")

    table = run_cli(capsys, database_url, schema, "queues")
    as_json = run_cli(capsys, database_url, schema, "queues", "--json")

    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == [
        "queue", "paused", "max", "waiting", "max", "running", "available", "running",
        "completed", "failed", "cancelled", "blocked", "oldest", "waiting",
    ]  # fmt: skip
    assert lines[2].split() == ["default", "-", "-", "-", "0", "0", "1", "0", "0", "0", "-"]
    assert lines[3].split() == ["empty", "paused", "-", "-", "0", "0", "0", "0", "0", "0", "-"]
    assert lines[4].split()[:9] == ["mail", "paused", "100", "-", "1", "0", "0", "1", "0"]
    found = {queue["queue"]: queue for queue in json.loads(as_json.out)}
    assert list(found) == ["default", "empty", "mail"]
    assert found["mail"]["paused"] is True
    assert found["mail"]["max_waiting"] == 100
    assert found["mail"]["counts"]["available"] == 1
    assert found["mail"]["total"] == 2
    assert found["default"]["paused"] is False
    assert found["default"]["max_waiting"] is None
    assert found["mail"]["max_running"] is None


def test_pause_and_resume_print_what_they_did(
    capsys: Capsys, database_url: str, schema: str
) -> None:
    paused = run_cli(capsys, database_url, schema, "queue", "pause", "mail")
    resumed = run_cli(capsys, database_url, schema, "queue", "resume", "mail")
    blank = run_cli(capsys, database_url, schema, "queue", "pause", " ")

    assert (paused.code, paused.out) == (0, "paused queue 'mail'\n")
    assert (resumed.code, resumed.out) == (0, "resumed queue 'mail'\n")
    assert blank.code == 1
    assert blank.err.startswith("pgjobs: error: queue must be a non-empty string")


@pytest.mark.slow
def test_pause_stops_claims_and_resume_restarts_them_across_a_worker_restart(
    app: App,
    start_worker: StartWorker,
    runs_table: str,
    observer: psycopg.Connection[Any],
    capsys: Capsys,
    database_url: str,
    schema: str,
) -> None:
    # Given a worker whose poll is 30 s away, so that only a notification can wake it
    worker = start_worker("--poll-interval", "30")
    first = app.enqueue(None, "record", {"label": "before"})
    wait_for_job(observer, schema, first, worker=worker)

    # When the queue is paused, a new job waits, also through a worker restart
    assert run_cli(capsys, database_url, schema, "queue", "pause", "default").code == 0
    waiting = app.enqueue(None, "record", {"label": "paused"})
    stays_true(lambda: job(observer, schema, waiting)["state"] == "available", 1.5)
    assert worker.stop() == 0
    worker = start_worker("--poll-interval", "30")
    stays_true(lambda: job(observer, schema, waiting)["state"] == "available", 1.5)

    # Then resume makes the worker claim it at once
    assert run_cli(capsys, database_url, schema, "queue", "resume", "default").code == 0
    [(resumed_at,)] = observer.execute("SELECT clock_timestamp()").fetchall()
    wait_for_job(observer, schema, waiting, worker=worker)
    [ran] = [run for run in runs(observer, schema) if run["job_id"] == waiting]
    assert (ran["at"] - resumed_at).total_seconds() < 1.0
