"""A worker's connection budget, read from `pg_stat_activity`: at rest three at most (the
shared one, the listener's, the maintenance leader's), more only while it drains, and
each named after its worker."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from pgjobs import App
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.shared_connections import SharedConnections
from tests.helpers import StartWorker, state_counts, stays_true, wait_until

Connection = psycopg.Connection[Any]
AT_REST = 3


def connections_named(observer: Connection, application_name: str) -> int:
    [(count,)] = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        (application_name,),
    ).fetchall()
    return int(count)


def test_an_idle_worker_holds_three_connections_and_more_only_while_it_drains(
    app: App, database_url: str, observer: Connection, start_worker: StartWorker
) -> None:
    # given: a worker that beats every half second, alone, so the maintenance leader
    worker = start_worker("--rescue-after", "2", "--concurrency", "8")

    def held() -> int:
        return connections_named(observer, worker.application_name)

    # then: at rest it holds three connections at most, over several beats
    wait_until(lambda: held() <= AT_REST, 20, message=lambda: f"{held()}; {worker.describe()}")
    stays_true(lambda: held() <= AT_REST, 2.0, message=lambda: f"{held()} connections at rest")
    # when: it drains a backlog, its claims, readying and outcome writes run at once
    peak = 0
    draining = threading.Event()

    def watch() -> None:
        nonlocal peak
        with psycopg.connect(database_url, autocommit=True) as watcher:
            while not draining.wait(0.005):
                peak = max(peak, connections_named(watcher, worker.application_name))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        app.enqueue_many(None, [("noop", {})] * 20_000)
        wait_until(lambda: state_counts(database_url, app.schema)["completed"] == 20_000, 60)
    finally:
        draining.set()
        watcher.join()
    # then: it may hold more meanwhile, never more than its parts can use at once
    assert AT_REST <= peak <= AT_REST - 1 + SharedConnections.max_size
    print(f"\nFIGURES connections: at rest <= {AT_REST}, peak while draining {peak}")
    # and back at rest, the extra ones close
    wait_until(lambda: held() <= AT_REST, 20, message=lambda: f"{held()} after the drain")
    assert worker.stop() == 0


def test_a_worker_names_its_connections_after_itself(
    app: App, observer: Connection, schema: str
) -> None:
    # given: a worker on a URL that names no application
    worker = Worker(app, WorkerSettings(rescue_after=2), worker_id="host:1:abcdef")
    worker.start()
    try:
        # then: its connections say whose they are: the shared one, the listener's and,
        # alone and so the leader, the maintenance group's
        wait_until(lambda: connections_named(observer, "pgjobs-worker host:1:abcdef") == 3, 20)
    finally:
        assert worker.shutdown() == 0
    wait_until(lambda: connections_named(observer, "pgjobs-worker host:1:abcdef") == 0)
