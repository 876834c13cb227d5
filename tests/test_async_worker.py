"""`async def` tasks run by `pgjobs work` on its event loop, beside the thread pool.

Real worker processes serve `tests/async_worker_app.py`; its tasks record their runs in
`<schema>.runs`. The first tests check the routing in `ClaimBuffer` in-process.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs import App, ConfigurationError
from pgjobs.admin import cancel_jobs
from pgjobs.types import ClaimedJob
from pgjobs.worker import WorkerSettings
from pgjobs.worker.claim_buffer import ClaimBuffer
from tests import async_worker_app
from tests.helpers import StartWorker, ago, job, runs, wait_for_job, wait_until

Connection = psycopg.Connection[Any]
ASYNC_APP = "tests.async_worker_app:app"
# Heartbeats every 0.5 s, so a cancelled job is noticed quickly.
FAST_HEARTBEAT = ("--rescue-after", "2")


RUN_AT = ago().timestamp()


def claimed(job_id: int, task: str) -> ClaimedJob:
    return ClaimedJob(job_id, "default", task, "{}", 1, 1, RUN_AT)


def labels(observer: Connection, schema: str, job_id: int) -> list[str]:
    """The labels job `job_id` recorded, in order."""
    return [r["label"] for r in runs(observer, schema) if r["job_id"] == job_id]


def wait_for_label(observer: Connection, schema: str, job_id: int, label: str) -> None:
    wait_until(
        lambda: label in labels(observer, schema, job_id),
        timeout=20,
        message=lambda: (
            f"job {job_id} never recorded {label!r}: {labels(observer, schema, job_id)}"
        ),
    )


# --- routing -------------------------------------------------------------------------


def test_claim_buffer_gives_async_jobs_their_own_line_and_slots() -> None:
    # given: 1 thread, 2 async slots, nothing claimed ahead
    buffer = ClaimBuffer(1, 0, async_slots=2, is_async=lambda job: job.task == "a")
    woken: list[bool] = []
    buffer.on_async_jobs(lambda: woken.append(True))
    # when
    jobs = [claimed(1, "a"), claimed(2, "s"), claimed(3, "a"), claimed(4, "a")]
    buffer.add(jobs, ready=[job.id for job in jobs])
    # then: the thread gets the plain job, the loop at most two async ones
    assert woken == [True]
    assert buffer.take() == claimed(2, "s")
    assert [buffer.take_async(), buffer.take_async()] == [claimed(1, "a"), claimed(3, "a")]
    assert buffer.take_async() is None  # no slot left
    assert (buffer.running(), buffer.running_async()) == (1, 2)
    assert sorted([job.id for job in buffer.waiting_jobs()]) == [4]
    buffer.done_async(claimed(1, "a"), 0.001)
    assert buffer.take_async() == claimed(4, "a")


def test_claim_buffer_claims_for_idle_async_slots_and_bounds_everything_held() -> None:
    buffer = ClaimBuffer(2, 1, async_slots=3, is_async=lambda job: job.task == "a")
    assert buffer.room() == 5  # nothing measured yet: nothing claimed ahead
    buffer.estimates.observe("s", 0.001)  # short jobs: one may wait ahead
    assert buffer.room() == 6
    jobs = [claimed(n, "s") for n in range(3)]
    buffer.add(jobs, ready=[job.id for job in jobs])  # threads busy, one waiting
    buffer.take()
    buffer.take()
    # an idle async slot still asks for jobs, within the one bound
    assert buffer.wants_jobs()
    assert buffer.room() == 3
    assert sorted(job.id for job in buffer.close()) == [2]


def test_async_concurrency_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="--async-concurrency"):
        WorkerSettings(async_concurrency=0)


# --- the worker ----------------------------------------------------------------------


@pytest.mark.slow
def test_worker_runs_a_thousand_sync_and_a_thousand_async_jobs_within_both_limits(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: 4 threads and 20 async slots; the jobs interleaved in the queue
    worker = start_worker("--concurrency", "4", "--async-concurrency", "20", app=ASYNC_APP)
    items: list[Any] = []
    for _ in range(1000):
        items.append(("gauge_sync", {"seconds": 0.002}))
        items.append(("gauge_async", {"seconds": 0.02}))
    # when
    ids = app.enqueue_many(None, items)
    # then: all complete, once each, and no limit was ever exceeded
    wait_until(
        lambda: (
            observer.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {} WHERE state = 'completed'").format(
                    psycopg.sql.Identifier(app.schema, "jobs")
                )
            ).fetchone()
            == (2000,)
        ),
        timeout=120,
        interval=0.2,
        message=worker.describe,
    )
    assert {job(observer, app.schema, i)["attempts"] for i in (ids[0], ids[1], ids[-1])} == {1}
    peaks_id = app.enqueue(None, "peaks")
    wait_for_job(observer, app.schema, peaks_id, "completed", timeout=20, worker=worker)
    [label] = labels(observer, app.schema, peaks_id)
    sync_peak, async_peak = map(int, re.findall(r"\d+", label))
    assert 1 <= sync_peak <= 4, label
    # more coroutines at once than there are threads: the async jobs ran on the loop
    assert 4 < async_peak <= 20, label
    assert worker.stop(30) == 0


@pytest.mark.slow
def test_async_task_fails_and_retries_like_a_thread_task(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    worker = start_worker(app=ASYNC_APP)
    job_id = app.enqueue(None, "async_fails")

    done = wait_for_job(observer, app.schema, job_id, "completed", timeout=20, worker=worker)

    assert done["attempts"] == 2
    [error] = done["errors"]
    assert error["error"] == "ValueError: async failure"
    assert "async_fails" in error["traceback"]
    assert labels(observer, app.schema, job_id) == ["ran", "ran"]


@pytest.mark.slow
def test_async_task_past_its_timeout_is_cancelled_and_sees_its_stop_signal(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: `async_times_out` has timeout=0.3 and sleeps 10 s
    worker = start_worker(app=ASYNC_APP)
    # when
    job_id = app.enqueue(None, "async_times_out", max_attempts=1)
    # then: the attempt is failed as timed out, and the coroutine was cancelled at once
    failed = wait_for_job(observer, app.schema, job_id, "failed", timeout=20, worker=worker)
    [error] = failed["errors"]
    assert error["timed_out"] is True
    assert error["error"] == "TimeoutError: timed out after 0.3s"
    wait_for_label(observer, app.schema, job_id, "cancelled")
    wait_for_label(observer, app.schema, job_id, "stop signalled")
    assert "finished" not in labels(observer, app.schema, job_id)
    # and the slot it held is free: the next job runs
    next_id = app.enqueue(None, "gauge_async", {"seconds": 0})
    wait_for_job(observer, app.schema, next_id, "completed", timeout=20, worker=worker)


@pytest.mark.slow
def test_cancelling_a_running_async_job_cancels_its_coroutine(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a coroutine sleeping for a minute
    worker = start_worker(*FAST_HEARTBEAT, app=ASYNC_APP)
    job_id = app.enqueue(None, "async_sleep", {"seconds": 60})
    wait_for_label(observer, app.schema, job_id, "started")
    # when
    cancel_jobs(app, [job_id])
    # then: the task sees CancelledError long before its sleep ends, and stays cancelled
    wait_for_label(observer, app.schema, job_id, "cancelled")
    assert job(observer, app.schema, job_id)["state"] == "cancelled"
    assert worker.stop(15) == 0
    assert job(observer, app.schema, job_id)["state"] == "cancelled"


@pytest.mark.slow
def test_sigterm_drains_running_sync_and_async_jobs(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: one job of each kind running, each needing a second
    worker = start_worker("--shutdown-timeout", "20", app=ASYNC_APP)
    sync_id = app.enqueue(None, "sync_sleep", {"seconds": 1.0})
    async_id = app.enqueue(None, "async_sleep", {"seconds": 1.0})
    wait_for_label(observer, app.schema, sync_id, "started")
    wait_for_label(observer, app.schema, async_id, "started")
    # when
    worker.send(signal.SIGTERM)
    # then: both finish before the worker exits cleanly
    assert worker.wait_exit(20) == 0
    for job_id in (sync_id, async_id):
        done = job(observer, app.schema, job_id)
        assert (done["state"], done["attempts"]) == ("completed", 1)
        assert labels(observer, app.schema, job_id) == ["started", "finished"]


@pytest.mark.slow
def test_sigterm_past_the_shutdown_timeout_cancels_the_coroutine_and_puts_the_job_back(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a coroutine that would sleep for a minute
    worker = start_worker("--shutdown-timeout", "0.5", app=ASYNC_APP)
    job_id = app.enqueue(None, "async_sleep", {"seconds": 60})
    wait_for_label(observer, app.schema, job_id, "started")
    # when
    worker.send(signal.SIGTERM)
    # then
    assert worker.wait_exit(15) == 0
    back = job(observer, app.schema, job_id)
    assert (back["state"], back["attempts"], back["errors"]) == ("available", 0, [])
    assert labels(observer, app.schema, job_id) == ["started", "cancelled"]


@pytest.mark.slow
def test_a_coroutine_that_blocks_the_event_loop_is_logged_with_its_job_and_line(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    worker = start_worker("--log-format", "json", app=ASYNC_APP)
    job_id = app.enqueue(None, "blocks_loop", {"seconds": 1.5})

    wait_for_job(observer, app.schema, job_id, "completed", timeout=20, worker=worker)
    wait_until(
        lambda: any(e["message"].startswith("event loop blocked") for e in worker.json_logs()),
        message=worker.describe,
    )

    [blocked] = [e for e in worker.json_logs() if e["message"].startswith("event loop blocked")]
    assert blocked["level"] == "warning"
    assert (blocked["job_id"], blocked["task"]) == (job_id, "blocks_loop")
    source = Path(async_worker_app.__file__)
    line = (
        source.read_text()
        .splitlines()
        .index("    time.sleep(seconds)  # the line the watchdog must name")
    )
    assert blocked["where"] == f"{source}:{line + 1} in blocks_loop"
    assert blocked["blocked_for"] >= 0.25
