"""`pgjobs cancel` of a running job reaches its task at once, not at the next heartbeat."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.admin import cancel_jobs
from pgjobs.data.sql import control_channel
from pgjobs.worker.control import ControlMessages
from tests.helpers import (
    StartWorker,
    make_job,
    run_cli,
    running,
    runs,
    stays_true,
    wait_for_job,
    wait_until,
)

Capsys = pytest.CaptureFixture[str]


def test_cancelling_a_running_job_notifies_its_worker(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    observer.execute(sql.SQL("LISTEN {}").format(sql.Identifier(control_channel(schema))))
    busy = make_job(app, observer, **running())
    waiting = make_job(app, observer)

    cancel_jobs(app, [busy, waiting])

    notifications = list(observer.notifies(timeout=2, stop_after=1))
    assert [json.loads(n.payload) for n in notifications] == [
        {"cancel": busy, "worker": running()["worker_id"]}
    ]
    assert list(observer.notifies(timeout=0.2)) == []  # none for the job that waited


def test_a_control_message_stops_only_the_named_workers_job() -> None:
    stopped: list[Collection[int]] = []
    messages = ControlMessages("host:1:abc", stopped.append)

    messages.handle(json.dumps({"cancel": 7, "worker": "host:2:def"}))
    messages.handle("not json")
    messages.handle(json.dumps(["cancel", 7]))
    messages.handle(json.dumps({"cancel": 8, "worker": "host:1:abc"}))

    assert stopped == [{8}]


@pytest.mark.slow
def test_cancel_sets_the_stop_flag_of_a_running_job_within_a_second(
    app: App,
    start_worker: StartWorker,
    runs_table: str,
    observer: psycopg.Connection[Any],
    capsys: Capsys,
    database_url: str,
    schema: str,
) -> None:
    # Given a running task that waits on its stop flag, and heartbeats 10 s apart
    worker = start_worker("--rescue-after", "60")
    job_id = app.enqueue(None, "sleep", {"seconds": 30, "cooperative": True})
    wait_until(lambda: runs(observer, schema), 10, message=worker.describe)

    # When it is cancelled
    result = run_cli(capsys, database_url, schema, "cancel", str(job_id))
    [(cancelled_at,)] = observer.execute("SELECT clock_timestamp()").fetchall()

    # Then the task sees its stop flag within a second, and the job stays cancelled
    assert result.code == 0, result.err
    wait_until(lambda: len(runs(observer, schema)) == 2, 10, message=worker.describe)
    finished = runs(observer, schema)[-1]
    assert finished["label"] == "finished"
    assert (finished["at"] - cancelled_at).total_seconds() < 1.0
    stays_true(lambda: wait_for_job(observer, schema, job_id, "cancelled"), 0.5)
    assert "job cancelled while running" in worker.logs()
