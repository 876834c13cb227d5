"""Bad input from producers, tasks and declarations: a precise error, and nothing lost.

Each test here failed before the fix it covers (issue: hardening from a newcomer's run).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs import (
    App,
    DatabaseUnavailableError,
    InvalidJobError,
    InvalidTaskError,
    PayloadNotSerializableError,
)
from pgjobs.embedded import LocalCluster
from pgjobs.errors import ConfigurationError
from pgjobs.migrate import upgrade
from pgjobs.worker import WorkerSettings
from tests.helpers import StartWorker, wait_for_job

Connection = psycopg.Connection[Any]


@pytest.mark.slow
def test_unstorable_error_text_neither_poisons_its_batch_nor_gets_a_live_worker_rescued(
    app: App, observer: Connection, start_worker: StartWorker
) -> None:
    # given: two tasks failing with text jsonb cannot hold, among jobs that succeed
    worker = start_worker("--rescue-after", "2")
    ids = app.enqueue_many(
        None,
        [
            ("noop", {}),
            ("raises_unstorable", {"kind": "nul"}, {"max_attempts": 1}),
            ("noop", {}),
            ("raises_unstorable", {"kind": "surrogate"}, {"max_attempts": 1}),
            ("noop", {}),
        ],
    )
    # when
    expected = ["completed", "failed", "completed", "failed", "completed"]
    done = [
        wait_for_job(observer, app.schema, job_id, state, worker=worker)
        for job_id, state in zip(ids, expected, strict=True)
    ]
    # then: the successes completed on their first attempt, never rescued
    for row in (done[0], done[2], done[4]):
        assert (row["state"], row["attempts"], row["errors"]) == ("completed", 1, [])
    # and the failures recorded their real error, repaired
    for row in (done[1], done[3]):
        assert row["state"] == "failed"
        [entry] = row["errors"]
        assert entry["error"] == "ValueError: bad byte \ufffd here"
        assert "worker lost" not in entry["error"]


@pytest.mark.parametrize(
    ("value", "what"),
    [("a\x00b", "NUL"), ("\ud800", "surrogate"), ({"nested": ["x\x00"]}, "NUL")],
)
def test_payload_jsonb_cannot_store_is_refused_before_anything_is_sent(
    app: App, conn: Connection, value: object, what: str
) -> None:
    # given: a caller's transaction with work of its own
    conn.execute("SELECT 1")
    # when
    with pytest.raises(PayloadNotSerializableError, match="argument 'text'"):
        app.enqueue(conn, "anything", {"text": value})
    # then: the caller's transaction is still usable
    assert conn.execute("SELECT 2").fetchone() == (2,)
    conn.commit()


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"queue": "q\x00"}, "queue"),
        ({"unique_key": "k\x00"}, "unique_key"),
        ({"unique_key": "k" * 1001}, "longer than 1000 bytes"),
        ({"queue": "é" * 101}, "longer than 200 bytes"),
    ],
)
def test_options_postgresql_cannot_store_or_index_are_invalid(
    app: App, conn: Connection, options: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(InvalidJobError, match=complaint):
        app.enqueue(conn, "anything", {}, **options)
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_task_name_with_nul_is_invalid(app: App, conn: Connection) -> None:
    with pytest.raises(InvalidJobError, match="task name"):
        app.enqueue(conn, "bad\x00name", {})


def test_generator_functions_are_refused_as_tasks_and_coroutine_functions_accepted(
    app: App,
) -> None:
    async def fetch() -> None: ...

    def produce() -> Iterator[int]:
        yield 1

    async def stream() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(InvalidTaskError, match="generator function"):
        app.task(produce)
    with pytest.raises(InvalidTaskError, match="async generator function"):
        app.task(stream)
    assert app.tasks == {}
    assert app.task(fetch).is_async


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0, -1])
def test_task_timeout_must_be_a_finite_positive_number(app: App, timeout: float) -> None:
    def work() -> None: ...

    with pytest.raises(InvalidTaskError, match="timeout"):
        app.task(timeout=timeout)(work)


def test_registering_two_tasks_under_one_name_is_an_error(app: App) -> None:
    @app.task(name="email.send")
    def first() -> None: ...

    def second() -> None: ...

    with pytest.raises(InvalidTaskError, match="already registered"):
        app.task(name="email.send")(second)
    assert app.tasks["email.send"].func is first.func


@pytest.mark.parametrize(
    "payload", [{}, {"to": "a@example.com", "subject": "hi", "cc": "b@example.com"}]
)
def test_enqueue_of_a_known_task_with_arguments_that_do_not_fit_is_refused(
    app: App, conn: Connection, payload: dict[str, Any]
) -> None:
    @app.task(name="email.send")
    def send(to: str, subject: str) -> None: ...

    with pytest.raises(InvalidJobError, match=r"do not fit task email\.send"):
        app.enqueue(conn, "email.send", payload)
    with pytest.raises(InvalidJobError):
        send.enqueue(conn, **payload)
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_context_taking_task_is_checked_without_its_context(app: App, conn: Connection) -> None:
    @app.task(name="ctx", pass_context=True)
    def uses_context(ctx: object, n: int) -> None: ...

    assert uses_context.enqueue(conn, n=1) > 0
    with pytest.raises(InvalidJobError):
        uses_context.enqueue(conn)


@pytest.mark.parametrize(
    "settings",
    [
        {"poll_interval": math.nan},
        {"rescue_after": math.nan},
        {"shutdown_timeout": math.inf},
        {"concurrency": 100_000},
        {"prefetch": -1},
    ],
)
def test_worker_settings_refuse_non_finite_and_absurd_values(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        WorkerSettings(**settings)


def test_producer_whose_database_went_away_gets_a_clear_error_within_its_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given: an App that enqueued on its own pool, then its server stopped
    cluster = LocalCluster(tmp_path / "pgdata", server_options={"fsync": "off"})
    url = cluster.ensure_running()
    try:
        upgrade(url, "pgjobs")
        app = App(url, database_wait=1.0)
        app.enqueue(None, "anything", {})
    finally:
        cluster.stop()
    # when
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="within 1s"):
        app.enqueue(None, "anything", {})
    # then: quickly, and with at most one warning from the pool's retries
    assert time.monotonic() - started < 5
    app.close()
    assert len([r for r in caplog.records if r.name.startswith("psycopg.pool")]) <= 1
