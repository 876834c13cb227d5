"""No part of a worker dies silently: failing passes are retried with backoff and logged,
and an error no retry can heal stops the worker with a non-zero exit and one line."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App, Backoff
from pgjobs.types import ClaimedJob, Outcome
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.events import EventBus
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.outcomes import OutcomePolicy
from pgjobs.worker.service import LoopService
from tests.helpers import StartWorker, wait_until

Connection = psycopg.Connection[Any]


class Flaky(LoopService):
    """Fails its first `failures` passes with `error`, then counts passes."""

    def __init__(self, error: Exception, failures: int) -> None:
        super().__init__("flaky", interval=0.01)
        self.error = error
        self.failures = failures
        self.passes = 0

    def run_once(self) -> None:
        self.passes += 1
        if self.passes <= self.failures:
            raise self.error


def test_a_pass_that_raises_a_bug_is_logged_with_its_traceback_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Flaky(KeyError("oops"), failures=3)
    with caplog.at_level(logging.INFO, logger="pgjobs.worker"):
        service.start()
        wait_until(lambda: service.passes > 4)
        service.stop(2)
    failures = [r for r in caplog.records if "flaky failed" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR] * 3
    assert all(r.exc_info is not None for r in failures)  # a bug shows where it is
    assert [r.getMessage() for r in failures][:3] == [
        "flaky failed, retrying in 0.01s",
        "flaky failed, retrying in 0.02s",
        "flaky failed, retrying in 0.04s",
    ]
    assert any(r.getMessage() == "flaky recovered" for r in caplog.records)


def test_a_database_error_is_one_line_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    service = Flaky(psycopg.OperationalError("server closed the connection"), failures=3)
    with caplog.at_level(logging.DEBUG, logger="pgjobs.worker"):
        service.start()
        wait_until(lambda: service.passes > 4)
        service.stop(2)
    failures = [r for r in caplog.records if "flaky failed" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert all(r.exc_info is None for r in failures)


def test_an_unhealable_error_ends_the_loop_and_reports_it() -> None:
    service = Flaky(psycopg.errors.UndefinedTable('relation "s.queues" does not exist'), 1)
    fatal: list[BaseException] = []
    done = threading.Event()

    def on_fatal(failed: object, error: BaseException) -> None:
        fatal.append(error)
        done.set()

    service.on_fatal = on_fatal  # type: ignore[method-assign,assignment]
    service.start()
    assert done.wait(5)
    assert service.join(2)
    assert service.passes == 1 and isinstance(fatal[0], psycopg.errors.UndefinedTable)


class BrokenBackoff(Backoff):
    def delay(self, attempt: int, random: Any) -> float:
        raise ZeroDivisionError("a custom policy with a bug")


def test_a_retry_policy_that_fails_costs_no_outcome_and_no_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("postgresql:///unused", backoff=BrokenBackoff())

    @app.task(name="fails")
    def fails() -> None:
        raise ValueError("boom")

    buffer = ClaimBuffer(concurrency=1, prefetch=0)
    reported: list[Outcome] = []
    pool = ExecutorPool(
        buffer=buffer,
        policy=OutcomePolicy(app.tasks, app.backoff, lambda: 0.5, "w"),
        report=reported.append,
        events=EventBus(),
    )
    buffer.add([ClaimedJob(1, "default", "fails", "{}", 1, 3, 0.0)], ready=[1])
    with caplog.at_level(logging.ERROR, logger="pgjobs.worker"):
        assert pool.run_once() is True
    [outcome] = reported
    assert outcome.state == "available" and outcome.delay is not None and outcome.delay > 0
    assert "retry policy failed" in caplog.text


@pytest.mark.slow
def test_a_worker_whose_schema_falls_behind_stops_with_one_line(
    app: App, observer: Connection, start_worker: StartWorker
) -> None:
    # given: a running worker
    worker = start_worker("--poll-interval", "0.05")
    # when: a table its claims need disappears (as with a schema migrated by an older
    # pgjobs, or downgraded under it)
    observer.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(app.schema, "queues")))
    # then: it stops by itself, exit status 1, saying why in one line
    assert worker.wait_exit(15) == 1, worker.describe()
    [line] = [line for line in worker.logs().splitlines() if "CRITICAL" in line]
    assert "worker stopping: fetcher cannot go on" in line
    assert "queues" in line


@pytest.mark.slow
def test_sighup_stops_the_worker_gracefully(app: App, start_worker: StartWorker) -> None:
    worker = start_worker()
    worker.send(signal.SIGHUP)
    assert worker.wait_exit(15) == 0
    assert "signal received: shutting down" in worker.logs()
