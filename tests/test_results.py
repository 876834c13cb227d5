"""Results: `store_result`, and waiting for them with `App.result`, `result_async` and
`results`, against a real PostgreSQL and real `pgjobs work` processes (tests/results_app.py).

Jobs a test wants finished without a worker are finished by hand, by one UPDATE and
the notification the worker would send (`finish`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
import pgjobs.results
from pgjobs import App, JobCancelledError, JobFailedError, JobNotFoundError
from pgjobs.admin import cancel_jobs
from pgjobs.data.sql import results_channel
from pgjobs.embedded import LocalCluster
from pgjobs.errors import DatabaseUnavailableError, PgJobsError
from tests.helpers import (
    REPO_ROOT,
    UNREACHABLE_URL,
    StartWorker,
    query,
    stays_true,
    wait_until,
)
from tests.helpers.readme import code_blocks
from tests.results_app import APP_RESULT_MAX_BYTES, TASK_RESULT_MAX_BYTES
from tests.results_app import app as results_app

RESULTS_APP = "tests.results_app:app"
LISTENER_NAME = f"{pgjobs.results.APPLICATION_NAME_PREFIX} {os.getpid()}"
# With the poll this far away, an answer within a second or two came by notification.
NO_POLL = 60.0
QUICK = 2.0

Connection = psycopg.Connection[Any]


@pytest.fixture
def no_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listeners started from now on poll every NO_POLL seconds: only NOTIFY wakes them."""
    monkeypatch.setattr(pgjobs.results, "POLL_INTERVAL", NO_POLL)


def enqueue(app: App, task: str, arguments: dict[str, Any] | None = None) -> int:
    """Enqueue (committed) a job of tests/results_app.py's `task` with its declared
    options (max_attempts): the test's App enqueues by name, not knowing the task."""
    return app.enqueue(None, task, arguments, options=results_app.get_task(task).defaults)


def job_row(observer: Connection, schema: str, job_id: int) -> dict[str, Any]:
    statement = sql.SQL("SELECT state, result, errors, attempts FROM {} WHERE id = %s").format(
        sql.Identifier(schema, "jobs")
    )
    row = observer.execute(statement, (job_id,)).fetchone()
    assert row is not None, f"job {job_id} not found"
    return dict(zip(("state", "result", "errors", "attempts"), row, strict=True))


def finish(
    observer: Connection,
    schema: str,
    job_id: int,
    state: str = "completed",
    *,
    result: Any = None,
    error: str | None = None,
) -> None:
    """Finish a job by hand as the worker would, notification included."""
    entries = [] if error is None else [{"attempt": 1, "error": error, "traceback": None}]
    statement = sql.SQL(
        "UPDATE {} SET state = %s, result = %s::jsonb, errors = %s::jsonb, finished_at = now()"
        " WHERE id = %s"
    ).format(sql.Identifier(schema, "jobs"))
    with observer.transaction():
        observer.execute(statement, (state, json.dumps(result), json.dumps(entries), job_id))
        observer.execute("SELECT pg_notify(%s, '')", (results_channel(schema),))


def listener_backends(observer: Connection) -> list[int]:
    """The pids of this process's results listeners' connections."""
    found = observer.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (LISTENER_NAME,)
    ).fetchall()
    return [pid for (pid,) in found]


def the_listener(observer: Connection) -> int | None:
    """The pid of this process's one results listener connection; None unless one."""
    pids = listener_backends(observer)
    return pids[0] if len(pids) == 1 else None


def in_thread(call: Callable[[], Any]) -> Future[Any]:
    """Run `call` on a thread of its own; its outcome as a future."""
    future: Future[Any] = Future()

    def target() -> None:
        try:
            future.set_result(call())
        except BaseException as error:
            future.set_exception(error)

    threading.Thread(target=target, daemon=True).start()
    return future


def async_result(app: App, job_id: int, timeout: float) -> Any:
    """`result_async` on an event loop of its own, whose pool is closed with it."""

    async def wait() -> Any:
        try:
            return await app.result_async(job_id, timeout=timeout)
        finally:
            await app.async_database.close()

    return asyncio.run(wait())


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    began = time.monotonic()
    value = call()
    return value, time.monotonic() - began


# --- through a worker ---------------------------------------------------------------------


@pytest.mark.usefixtures("no_poll")
def test_stored_results_come_back_through_a_worker_woken_by_the_notification(
    app: App, schema: str, observer: Connection, start_worker: StartWorker
) -> None:
    start_worker(app=RESULTS_APP)
    for value in ({"a": [1, 2.5], "b": {"c": None}}, [1, "two", None], "text é", None, 0, True):
        job_id = app.enqueue(None, "give", {"value": value})
        # Waited for with the poll a minute away: the completing statement's NOTIFY
        # wakes the waiter.
        got, took = timed(partial(app.result, job_id, timeout=10))
        assert got == value
        assert took < QUICK
        row = job_row(observer, schema, job_id)
        assert (row["state"], row["result"]) == ("completed", value)
    # Already finished: answered by the first read, with no wait at all.
    assert app.result(job_id, timeout=0) is True


def test_a_task_that_stores_nothing_gives_none_found_by_the_poll(
    app: App, schema: str, observer: Connection, start_worker: StartWorker
) -> None:
    start_worker(app=RESULTS_APP)
    job_id = app.enqueue(None, "plain", {"value": {"not": "stored"}})
    got, took = timed(lambda: app.result(job_id, timeout=10))
    assert got is None
    assert took < pgjobs.results.POLL_INTERVAL + QUICK
    assert job_row(observer, schema, job_id)["result"] is None


def test_a_plain_completion_wakes_no_waiter_and_closing_the_app_ends_the_wait(
    app: App, schema: str, observer: Connection, no_poll: None, start_worker: StartWorker
) -> None:
    job_id = app.enqueue(None, "plain", {"value": 1})
    waiting = in_thread(lambda: app.result(job_id))
    wait_until(lambda: the_listener(observer), message="the listener never connected")
    start_worker(app=RESULTS_APP)
    wait_until(lambda: job_row(observer, schema, job_id)["state"] == "completed")
    # Plain jobs complete without a notification: only the poll, a minute away, would see it.
    stays_true(lambda: not waiting.done(), 0.3, message="a plain completion woke the waiter")
    app.close()
    with pytest.raises(PgJobsError, match="the App was closed"):
        waiting.result(timeout=5)
    wait_until(lambda: not listener_backends(observer), message="the listener's connection stayed")
    # The App can wait again: a new listener, and the first read finds the job finished.
    assert app.result(job_id, timeout=5) is None


def test_a_result_that_cannot_be_stored_fails_the_attempt_and_retries(
    app: App, schema: str, observer: Connection, start_worker: StartWorker
) -> None:
    start_worker(app=RESULTS_APP)
    not_json = enqueue(app, "not_json")
    over_app_cap = enqueue(app, "text_of", {"size": APP_RESULT_MAX_BYTES})  # + 2 quotes
    at_app_cap = enqueue(app, "text_of", {"size": APP_RESULT_MAX_BYTES - 2})
    over_task_cap = enqueue(app, "small_cap", {"value": "x" * TASK_RESULT_MAX_BYTES})
    under_task_cap = enqueue(app, "small_cap", {"value": "short"})
    ids = [not_json, over_app_cap, at_app_cap, over_task_cap, under_task_cap]

    got = app.results(ids, timeout=10, return_exceptions=True)

    assert got[2] == "x" * (APP_RESULT_MAX_BYTES - 2)
    assert got[4] == "short"
    expected = {
        not_json: "result of task 'not_json' is not JSON-serialisable: Object of type set",
        over_app_cap: "result of task 'text_of' is 1002 bytes of JSON, over its "
        f"result_max_bytes of {APP_RESULT_MAX_BYTES}",
        over_task_cap: "result of task 'small_cap' is 12 bytes of JSON, over its "
        f"result_max_bytes of {TASK_RESULT_MAX_BYTES}",
    }
    for job_id, message in expected.items():
        failed = got[ids.index(job_id)]
        assert isinstance(failed, JobFailedError)
        assert failed.error is not None
        assert failed.error.startswith("pgjobs.errors.ResultNotStorableError: " + message)
        row = job_row(observer, schema, job_id)
        # Both attempts ran and failed the same way (max_attempts=2): the retry policy applies.
        assert (row["state"], row["attempts"], row["result"]) == ("failed", 2, None)
        assert [e["attempt"] for e in row["errors"]] == [1, 2]
        assert all(message in e["error"] for e in row["errors"])


def test_a_failed_job_raises_its_last_error_and_traceback(
    app: App, start_worker: StartWorker
) -> None:
    start_worker(app=RESULTS_APP)
    job_id = enqueue(app, "boom", {"message": "kaput"})
    with pytest.raises(JobFailedError) as raised:
        app.result(job_id, timeout=10)
    failed = raised.value
    assert failed.job_id == job_id
    assert failed.error == "ValueError: kaput"
    assert str(failed) == f"job {job_id} failed: ValueError: kaput"
    assert failed.traceback is not None
    assert failed.traceback.startswith("Traceback (most recent call last):")
    assert "raise ValueError(message)" in failed.traceback


@pytest.mark.usefixtures("no_poll")
def test_results_waits_for_many_in_order_and_returns_or_raises_their_errors(
    app: App, observer: Connection, schema: str, start_worker: StartWorker
) -> None:
    cancelled = app.enqueue(None, "give", {"value": 0}, delay=3600)
    cancel_jobs(app, [cancelled])
    start_worker(app=RESULTS_APP)
    first = app.enqueue(None, "give", {"value": "first"})
    failing = enqueue(app, "boom", {"message": "no"})
    last = app.enqueue(None, "give", {"value": ["last"]})
    unknown = 10**12
    ids = [first, failing, last, unknown, cancelled, first]

    got, took = timed(lambda: app.results(ids, timeout=10, return_exceptions=True))

    assert took < QUICK  # the failure's statement notifies too
    assert [type(value) for value in got] == [
        str,
        JobFailedError,
        list,
        JobNotFoundError,
        JobCancelledError,
        str,
    ]
    assert (got[0], got[2], got[5]) == ("first", ["last"], "first")
    assert got[1].error == "ValueError: no"
    assert got[3].args == (
        f"job {unknown} does not exist: it was never enqueued, was pruned, or the "
        "transaction that enqueues it has not committed yet",
    )
    assert got[4].reason is None  # cancelled by hand: no reason recorded
    # Without return_exceptions the first error in the order of the ids is raised.
    with pytest.raises(JobFailedError, match=f"job {failing} failed"):
        app.results([first, failing, last, unknown], timeout=10)
    with pytest.raises(JobNotFoundError):
        app.results([last, unknown])
    assert app.results([], timeout=0) == []
    assert app.results((first, last)) == ["first", ["last"]]


def test_result_async_waits_without_blocking_the_event_loop(
    app: App, schema: str, observer: Connection, no_poll: None, start_worker: StartWorker
) -> None:
    start_worker(app=RESULTS_APP)
    pending = app.enqueue(None, "give", {"value": "late"}, delay=3600)

    async def main() -> tuple[list[Any], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            ids = [await app.enqueue_async(None, "give", {"value": n}) for n in range(3)]
            waits = [app.result_async(job_id, timeout=10) for job_id in ids]
            waits.append(app.result_async(enqueue(app, "boom", {"message": "async"}), 10))
            waits.append(app.result_async(pending, timeout=0.3))
            waits.append(app.result_async(10**12, timeout=10))
            got = await asyncio.gather(*waits, return_exceptions=True)
            return got, ticks
        finally:
            ticker.cancel()
            await app.aclose()

    (zero, one, two, failed, timed_out, unknown), ticks = asyncio.run(main())
    assert [zero, one, two] == [0, 1, 2]
    assert isinstance(failed, JobFailedError) and failed.error == "ValueError: async"
    assert isinstance(timed_out, TimeoutError)
    assert str(timed_out) == f"job {pending} did not finish within 0.3s"
    assert isinstance(unknown, JobNotFoundError)
    # The loop ran its other task during the waits (at least 0.3 s: about 30 ticks on a
    # quiet machine, 6 seen on a busy one); a wait that blocked the loop would leave
    # the ticker a tick or two, before and after it.
    assert ticks >= 4
    # A late finish by hand reaches an async waiter by the notification.
    waiting = in_thread(lambda: async_result(app, pending, timeout=10))
    wait_until(lambda: the_listener(observer))
    finish(observer, schema, pending, result={"done": True})
    assert waiting.result(timeout=QUICK) == {"done": True}


def test_waiting_goes_on_across_a_database_restart(
    app: App,
    schema: str,
    observer: Connection,
    database_url: str,
    local_cluster: LocalCluster | None,
    no_poll: None,
    start_worker: StartWorker,
) -> None:
    if local_cluster is None:
        pytest.skip("restarts the server: needs the session's own local cluster, not a given URL")
    # given a waiter listening for a job no worker runs yet
    job_id = app.enqueue(None, "give", {"value": "after the restart"})
    waiting = in_thread(lambda: app.result(job_id, timeout=30))
    before = wait_until(lambda: the_listener(observer))
    observer.close()

    # when PostgreSQL restarts (every session ends)
    try:
        local_cluster.pg_ctl("restart", "-m", "fast")
    finally:
        local_cluster.ensure_running()

    # then the listener reconnects and LISTENs again by itself, and the waiter, still
    # waiting, is woken by the notification of the completion that follows
    def listening_again() -> bool:
        # A new connection past its LISTEN: its last statement is the read that follows.
        found = query(
            database_url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> %s"
            " AND query <> '' AND query NOT ILIKE 'LISTEN%%'",
            (LISTENER_NAME, before),
        )
        return bool(found)

    wait_until(listening_again, timeout=15, message="the listener did not LISTEN again")
    assert not waiting.done()
    start_worker(app=RESULTS_APP)
    assert waiting.result(timeout=10) == "after the restart"


# --- the waiting itself, jobs finished by hand --------------------------------------------


@pytest.mark.usefixtures("no_poll")
def test_a_killed_listener_backend_is_replaced_and_the_waits_go_on(
    app: App, schema: str, observer: Connection
) -> None:
    ids = [app.enqueue(None, "give", {"value": n}) for n in range(2)]
    waiting = in_thread(partial(app.results, ids, timeout=20))
    before = wait_until(lambda: the_listener(observer))
    observer.execute("SELECT pg_terminate_backend(%s)", (before,))
    # A job finished while no one listens: its notification is lost, and the read that
    # follows the new LISTEN finds it.
    finish(observer, schema, ids[0], result="while away")
    after = wait_until(lambda: (pid := the_listener(observer)) != before and pid)
    assert not waiting.done()
    finish(observer, schema, ids[1], result="after")
    assert waiting.result(timeout=QUICK) == ["while away", "after"]
    assert listener_backends(observer) == [after]


@pytest.mark.usefixtures("no_poll")
def test_every_waiter_of_the_app_shares_one_listen_connection(
    app: App, schema: str, observer: Connection
) -> None:
    ids = [app.enqueue(None, "give", {"value": n}) for n in range(6)]
    waits = [in_thread(partial(app.result, job_id, timeout=20)) for job_id in ids[:3]]
    waits.append(in_thread(lambda: app.results(ids[3:5], timeout=20)))
    waits.append(in_thread(lambda: async_result(app, ids[5], timeout=20)))
    wait_until(lambda: the_listener(observer))
    stays_true(lambda: the_listener(observer), 0.2)
    assert not any(wait.done() for wait in waits)

    for job_id in ids:
        finish(observer, schema, job_id, result=f"value {job_id}")
    got = [wait.result(timeout=QUICK) for wait in waits]

    assert got == [
        *(f"value {job_id}" for job_id in ids[:3]),
        [f"value {ids[3]}", f"value {ids[4]}"],
        f"value {ids[5]}",
    ]
    assert len(listener_backends(observer)) == 1  # kept for the next waits
    app.close()
    wait_until(lambda: not listener_backends(observer))


def test_a_cancelled_job_raises_with_its_reason_when_one_was_recorded(
    app: App, schema: str, observer: Connection
) -> None:
    by_hand = app.enqueue(None, "give", {"value": 1})
    cancel_jobs(app, [by_hand])
    by_dependency = app.enqueue(None, "give", {"value": 2})
    reason = "cancelled: dependency fetch (job 1) failed"
    finish(observer, schema, by_dependency, "cancelled", error=reason)

    with pytest.raises(JobCancelledError) as raised:
        app.result(by_hand, timeout=5)
    assert (raised.value.job_id, raised.value.reason) == (by_hand, None)
    assert str(raised.value) == f"job {by_hand} was cancelled"
    with pytest.raises(JobCancelledError) as raised:
        app.result(by_dependency, timeout=5)
    assert (raised.value.job_id, raised.value.reason) == (
        by_dependency,
        "dependency fetch (job 1) failed",
    )
    assert str(raised.value) == f"job {by_dependency} was {reason}"


def test_an_unknown_or_uncommitted_job_is_not_found(app: App, conn: Connection) -> None:
    with pytest.raises(JobNotFoundError, match="job 123456 does not exist: it was never"):
        app.result(123456, timeout=5)
    uncommitted = app.enqueue(conn, "give", {"value": 1})  # not committed
    with pytest.raises(JobNotFoundError, match="has not committed yet") as raised:
        app.result(uncommitted, timeout=5)
    assert isinstance(raised.value, LookupError)
    conn.rollback()


def test_a_wait_past_its_timeout_raises_timeout_error(
    app: App, schema: str, observer: Connection
) -> None:
    job_id = app.enqueue(None, "give", {"value": 1})
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"^job {job_id} did not finish within 0.2s$"):
        app.result(job_id, timeout=0.2)
    assert 0.2 <= time.monotonic() - began < 0.2 + QUICK
    with pytest.raises(TimeoutError, match=rf"^job {job_id} did not finish within 0s$"):
        app.result(job_id, timeout=0)
    other = app.enqueue(None, "give", {"value": 2})
    with pytest.raises(TimeoutError, match=rf"^2 jobs \({job_id}, {other}\) did not finish"):
        app.results([job_id, other], timeout=timedelta(milliseconds=100))
    finish(observer, schema, job_id, result="now")
    assert app.result(job_id, timeout=0) == "now"


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (-1, "timeout must be a finite number of seconds >= 0, got -1"),
        (math.nan, "timeout must be a finite number of seconds >= 0, got nan"),
        (math.inf, "timeout must be at most"),
        (True, "timeout must be seconds or a timedelta, got True"),
        ("5", "timeout must be seconds or a timedelta, got '5'"),
    ],
)
def test_a_bad_timeout_is_refused_before_anything_waits(
    app: App, observer: Connection, timeout: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        app.result(1, timeout=timeout)
    with pytest.raises(ValueError, match=message):
        app.results([1], timeout=timeout)
    with pytest.raises(ValueError, match=message):
        asyncio.run(app.result_async(1, timeout=timeout))
    assert listener_backends(observer) == []


def test_a_bad_job_id_is_refused(app: App) -> None:
    with pytest.raises(TypeError, match="a job id is an int, got '1'"):
        app.result("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="job id must be from 1 to"):
        app.results([1, 0])


def test_an_unreachable_database_raises_database_unavailable() -> None:
    app = App(UNREACHABLE_URL, database_wait=1)
    try:
        with pytest.raises(DatabaseUnavailableError, match="cannot connect to PostgreSQL"):
            app.result(1, timeout=5)
    finally:
        app.close()


# --- the docs' example --------------------------------------------------------------------


@pytest.fixture
def docs_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, schema: str
) -> Iterator[list[str]]:
    """docs/results.md's Python blocks: the first written as `thumbnails.py` where this
    process and workers import it from; the others, the code that waits."""
    [module, *waits] = code_blocks((REPO_ROOT / "docs" / "results.md").read_text(), "python")
    (tmp_path / "thumbnails.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), inherited])))
    monkeypatch.setenv("PGJOBS_DATABASE_URL", database_url)
    monkeypatch.setenv("PGJOBS_SCHEMA", schema)
    yield waits
    example = sys.modules.pop("thumbnails", None)
    if example is not None:
        example.app.close()


def test_the_docs_example_runs_as_written(
    docs_example: list[str], start_worker: StartWorker, observer: Connection, schema: str
) -> None:
    start_worker(app="thumbnails:app")
    namespace: dict[str, Any] = {"__name__": "results_docs"}
    for block in docs_example:
        exec(compile(block, "docs/results.md", "exec"), namespace)
    # The failures its `except` clauses show did happen (and nothing else failed).
    statement = sql.SQL("SELECT payload ->> 'path' FROM {} WHERE state = 'failed' ORDER BY id")
    failed = observer.execute(statement.format(sql.Identifier(schema, "jobs"))).fetchall()
    assert failed == [("b.png",), ("c.png",), ("f.png",)]
