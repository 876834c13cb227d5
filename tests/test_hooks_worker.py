"""Hooks and middleware in a real `pgjobs work` process (tests/hooks_app.py): every event
once with its content, middleware in order around def and async def tasks, a raising
hook and a hanging hook that change no outcome, worker events at start and stop."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgjobs import App
from pgjobs.admin import cancel_jobs
from tests.helpers import StartWorker, state_counts, wait_until
from tests.hooks_app import app as hooks_app

HOOKS_APP = "tests.hooks_app:app"


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the worker's hooks write to (its path reaches the worker's environment)."""
    path = tmp_path / "hooks.jsonl"
    path.touch()
    monkeypatch.setenv("PGJOBS_TEST_HOOKS_FILE", str(path))
    return path


@pytest.fixture
def h_app(app: App) -> Iterator[App]:
    hooks_app.configure(database_url=app.database.url, schema=app.schema)
    yield hooks_app
    hooks_app.close()


def read(path: Path, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        line
        for line in lines
        if (kind is None or line["kind"] == kind)
        and all(line.get(key) == value for key, value in match.items())
    ]


def events_of(path: Path, job_id: int) -> list[str]:
    return [line["name"] for line in read(path, "event", job_id=job_id)]


def test_every_event_fires_once_with_its_content(
    h_app: App, records: Path, database_url: str, schema: str, start_worker: StartWorker
) -> None:
    worker = start_worker("--concurrency", "2", app=HOOKS_APP)
    ok = h_app.enqueue(None, "hooks.ok", {"n": 1}, meta={"tenant": "t1"})
    fails = h_app.enqueue(None, "hooks.fails")
    snoozes = h_app.enqueue(None, "hooks.snoozes")
    times_out = h_app.enqueue(None, "hooks.times_out")
    wait_until(
        lambda: state_counts(database_url, schema) == {"completed": 2, "failed": 2}, timeout=30
    )
    wait_until(lambda: len(events_of(records, times_out)) == 2, timeout=10)
    worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert worker.process.wait(timeout=30) == 0  # type: ignore[union-attr]

    assert events_of(records, ok) == ["job_started", "job_completed"]
    [completed] = read(records, "event", job_id=ok, name="job_completed")
    assert completed["task"] == "hooks.ok"
    assert completed["queue"] == "default"
    assert completed["attempt"] == 1
    assert completed["args"] == {"n": 1}
    assert completed["meta"] == {"tenant": "t1"}
    assert completed["duration"] > 0
    assert completed["exception"] is None
    worker_id = completed["worker_id"]
    assert worker_id and worker_id in worker.logs()

    assert events_of(records, fails) == [
        "job_started",
        "job_retried",
        "job_started",
        "job_failed",
    ]
    retried, failed = read(records, "event", job_id=fails, name="job_retried") + read(
        records, "event", job_id=fails, name="job_failed"
    )
    assert (retried["attempt"], failed["attempt"]) == (1, 2)
    assert retried["exception"] == failed["exception"] == "ValueError('boom')"
    assert retried["retry_in"] == pytest.approx(0.05)
    assert failed["retry_in"] is None
    assert read(records, "async_hook", job_id=fails)  # an async hook ran to its end

    assert events_of(records, snoozes) == [
        "job_started",
        "job_snoozed",
        "job_started",
        "job_completed",
    ]
    [snoozed] = read(records, "event", job_id=snoozes, name="job_snoozed")
    assert snoozed["retry_in"] == pytest.approx(0.05)
    assert snoozed["exception"] is None

    assert events_of(records, times_out) == ["job_started", "job_failed"]
    [timed_out] = read(records, "event", job_id=times_out, name="job_failed")
    assert timed_out["exception"].startswith("TimeoutError('timed out after 0.2s")

    # The hook that raises on every completion changed nothing, and said so.
    assert "a broken hook" in worker.logs()
    assert "hook failed" in worker.logs()
    starts = read(records, "event", name="worker_started")
    stops = read(records, "event", name="worker_stopped")
    assert [e["worker_id"] for e in starts] == [worker_id]
    assert [e["worker_id"] for e in stops] == [worker_id]
    assert read(records)[-1]["name"] == "worker_stopped"  # the last event of all


def test_middleware_runs_in_order_around_def_and_async_tasks(
    h_app: App, records: Path, database_url: str, schema: str, start_worker: StartWorker
) -> None:
    start_worker(app=HOOKS_APP)
    sync_id = h_app.enqueue(None, "hooks.ok", {"n": 7}, meta={"request_id": "r-1"})
    async_id = h_app.enqueue(None, "hooks.async_ok", {"n": 8})
    wait_until(lambda: state_counts(database_url, schema) == {"completed": 2}, timeout=30)

    assert [
        (line["name"], line["phase"]) for line in read(records, "middleware", job_id=sync_id)
    ] == [("outer", "before"), ("inner", "before"), ("inner", "after"), ("outer", "after")]
    [inner_after] = read(records, "middleware", job_id=sync_id, name="inner", phase="after")
    assert inner_after["value"] == 7  # call_next returned the task's value
    [outer_before] = read(records, "middleware", job_id=sync_id, name="outer", phase="before")
    assert outer_before["meta"] == {"request_id": "r-1"}
    # The task ran between the innermost middleware's two halves.
    lines = read(records)
    task_line = next(i for i, line in enumerate(lines) if line.get("n") == 7)
    inner_before = lines.index(
        read(records, "middleware", job_id=sync_id, name="inner", phase="before")[0]
    )
    assert inner_before < task_line < lines.index(inner_after)

    # An async task: the async middleware wraps it, the def ones do not.
    assert [
        (line["name"], line["phase"]) for line in read(records, "middleware", job_id=async_id)
    ] == [("async", "before"), ("async", "after")]
    assert read(records, "middleware", job_id=async_id, phase="after")[0]["value"] == 8


def test_a_cancelled_running_job_tells_job_cancelled(
    h_app: App, records: Path, database_url: str, schema: str, start_worker: StartWorker
) -> None:
    start_worker(app=HOOKS_APP)
    job_id = h_app.enqueue(None, "hooks.slow")
    wait_until(lambda: read(records, "task", job_id=job_id), timeout=20)

    assert cancel_jobs(h_app, [job_id]) == [job_id]

    wait_until(lambda: "job_cancelled" in events_of(records, job_id), timeout=20)
    assert events_of(records, job_id) == ["job_started", "job_cancelled"]
    assert state_counts(database_url, schema) == {"cancelled": 1}


def test_a_hanging_hook_holds_no_job_and_no_exit(
    h_app: App, records: Path, database_url: str, schema: str, start_worker: StartWorker
) -> None:
    worker = start_worker(app=HOOKS_APP)
    hung = h_app.enqueue(None, "hooks.ok", {"n": 1, "hang": 60})
    # Its job_completed was recorded; the next handler of that event now hangs.
    wait_until(lambda: "job_completed" in events_of(records, hung), timeout=20)

    later = [h_app.enqueue(None, "hooks.ok", {"n": n}) for n in range(2, 6)]
    wait_until(lambda: state_counts(database_url, schema) == {"completed": 5}, timeout=20)
    # The jobs ran and their outcomes were written; their events wait behind the hook.
    assert all(events_of(records, job_id) == [] for job_id in later)

    worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert worker.process.wait(timeout=20) == 0  # type: ignore[union-attr]
    assert "hooks still running at exit" in worker.logs()
