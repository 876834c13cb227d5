"""The notification check, one pass at a time: a worker's real listener and its probe,
on a direct connection and through PgBouncer in transaction mode."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest

from pgjobs import App
from pgjobs.data.sql import notify_channel
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.listener import Listener
from pgjobs.worker.notify_check import FAST_POLL_INTERVAL, PROBE_PAYLOAD, NotifyCheck
from tests.helpers import wait_until

WARNING = "notifications do not reach this worker"


@pytest.fixture
def pooled_app(pgbouncer_url: str, schema: str) -> Iterator[App]:
    application = App(pgbouncer_url, schema=schema)
    yield application
    application.close()


def listening(app: App, settings: WorkerSettings | None = None) -> Iterator[Worker]:
    """A worker of `app` whose listener alone runs, once LISTEN is in effect."""
    worker = Worker(app, settings or WorkerSettings(poll_interval=5.0))
    worker.parts.listener.start()
    try:
        wait_until(lambda: worker.parts.listener.listening, timeout=10)
        yield worker
    finally:
        worker.parts.listener.stop(5.0)
        worker.parts.close()


@pytest.fixture
def direct_worker(app: App) -> Iterator[Worker]:
    yield from listening(app)


@pytest.fixture
def pooled_worker(pooled_app: App) -> Iterator[Worker]:
    yield from listening(pooled_app)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_probe_reaches_a_listener_on_a_direct_connection(
    direct_worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    assert direct_worker.parts.notify_check.run_once() is True
    assert warnings(caplog) == []
    assert direct_worker.parts.fetcher.interval == 5.0


def test_probe_lost_behind_a_transaction_pooler_warns_once_and_polls_fast(
    pooled_worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    # when: two checks in a row find notifications lost
    first = pooled_worker.parts.notify_check.run_once()
    second = pooled_worker.parts.notify_check.run_once()

    # then
    assert (first, second) == (False, False)
    [warning] = warnings(caplog)
    assert "--listen-database-url" in warning
    assert pooled_worker.parts.fetcher.interval == FAST_POLL_INTERVAL


def test_a_direct_listen_url_behind_a_transaction_pooler_passes_the_check(
    pooled_app: App, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = WorkerSettings(poll_interval=5.0, listen_database_url=database_url)
    for worker in listening(pooled_app, settings):
        assert worker.parts.notify_check.run_once() is True
        assert warnings(caplog) == []


def test_probe_does_not_wake_the_fetcher(app: App, database_url: str) -> None:
    # given: a listener that wants every queue
    woken: list[None] = []
    heard: list[None] = []
    listener = Listener(
        ResilientConnection(app.database.url, "listener"),
        app.data.maintenance,
        wants=lambda queue: True,
        wake=lambda: woken.append(None),
        heard=lambda: heard.append(None),
    )
    listener.run_once()  # LISTEN, and the one wake-up for what was missed meanwhile
    woken.clear()

    # when
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (notify_channel(app.schema), PROBE_PAYLOAD))
    wait_until(lambda: listener.run_once() is not None and heard, timeout=10)

    # then
    assert woken == []
    listener.close()


def test_notifications_arriving_again_restore_the_poll_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given: a check whose probe is lost, then arrives
    caplog.set_level(logging.INFO, "pgjobs.worker")
    arrives = False
    polls: list[float] = []
    check: NotifyCheck

    def send_probe() -> None:
        if arrives:
            check.heard()

    check = NotifyCheck(
        send_probe=send_probe,
        listening=lambda: True,
        poll_every=polls.append,
        poll_interval=1.0,
        wait=0.05,
    )
    assert check.run_once() is False

    # when
    arrives = True
    assert check.run_once() is True

    # then: fast while lost, back to the configured poll after
    assert polls == [FAST_POLL_INTERVAL, 1.0]
    assert check.next_wait() == check.interval
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "notifications reach this worker" in caplog.records[1].getMessage()


def test_no_probe_while_the_listener_is_not_listening() -> None:
    sent: list[None] = []
    check = NotifyCheck(
        send_probe=lambda: sent.append(None),
        listening=lambda: False,
        poll_every=lambda seconds: None,
        poll_interval=1.0,
    )

    assert check.run_once() is None
    assert sent == []
