"""pgjobs through a real PgBouncer in transaction pooling mode (the `pgbouncer_url` fixture).

Transaction pooling hands each transaction to whichever server connection is free, so
server-side prepared statements and LISTEN do not survive from one transaction to the
next. Everything pgjobs does through its own connections must work anyway.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.data.producer import COPY_THRESHOLD
from pgjobs.embedded import LocalCluster
from pgjobs.pooler import PREPARE_THRESHOLD
from tests.helpers import WorkerProcess, run_cli, wait_for_job, wait_until

PROBE_WARNING = "notifications do not reach this worker"
# With a poll this slow, a job picked up within a second was woken by a NOTIFY or by the
# fast poll the notification check switches to, not by the regular poll.
SLOW_POLL = ("--poll-interval", "30")


@pytest.fixture
def pooled_app(pgbouncer_url: str, schema: str) -> Iterator[App]:
    """An App whose own pool goes through PgBouncer."""
    application = App(pgbouncer_url, schema=schema)
    yield application
    application.close()


def pickup_seconds(observer: psycopg.Connection[Any], schema: str, job_id: int) -> float:
    """From the enqueue's transaction to the claim, by the database's clock."""
    query = sql.SQL("SELECT extract(epoch FROM started_at - created_at) FROM {} WHERE id = %s")
    row = observer.execute(query.format(sql.Identifier(schema, "jobs")), (job_id,)).fetchone()
    assert row is not None
    return float(row[0])


def pickups(
    app: App, observer: psycopg.Connection[Any], schema: str, worker: WorkerProcess, count: int
) -> list[float]:
    """Enqueue `count` jobs one at a time through `app`'s own pool; their pickup times."""
    seconds = []
    for _ in range(count):
        job_id = app.enqueue(None, "noop", {})
        wait_for_job(observer, schema, job_id, timeout=40, worker=worker)
        seconds.append(pickup_seconds(observer, schema, job_id))
    return seconds


def test_own_pool_enqueues_many_times_through_the_pooler(
    pooled_app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # given: four producers sharing the App's pool, so PgBouncer deals its server
    # connections out in every order
    errors: list[BaseException] = []
    ids: list[int] = []

    def produce() -> None:
        try:
            for n in range(40):
                ids.append(pooled_app.enqueue(None, "noop", {"n": n}))
                ids.extend(pooled_app.enqueue_many(None, [("noop", {"n": n})] * 3))
        except BaseException as error:
            errors.append(error)

    # when
    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: no statement was prepared on one server connection and reused on another
    assert errors == []
    count = observer.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "jobs"))
    ).fetchone()
    assert count == (640,)
    assert len(set(ids)) == 640


def test_large_batches_are_copied_through_the_pooler(
    pooled_app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # given: batches big enough for both COPY paths (straight into jobs, and through a
    # temporary table for keyed jobs), from sync and async code, each in a transaction of
    # the App's own pool, which the pooler may run on any server connection
    size = COPY_THRESHOLD + 50

    def batches(code: str) -> list[list[tuple[Any, ...]]]:
        plain = [("noop", {"n": n}) for n in range(size)]
        return [plain, [("noop", {"n": n}, {"unique_key": f"{code}{n}"}) for n in range(size)]]

    async def from_async_code(batch: list[tuple[Any, ...]]) -> list[int]:
        try:
            return await pooled_app.enqueue_many_async(None, batch)
        finally:
            await pooled_app.aclose()

    # when
    ids = [pooled_app.enqueue_many(None, batch) for batch in batches("sync")]
    ids += [asyncio.run(from_async_code(batch)) for batch in batches("async")]
    again = asyncio.run(from_async_code(batches("sync")[1]))

    # then: every job is there once, in order; the keys enqueued again found their holders
    stored = observer.execute(
        sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "jobs"))
    ).fetchall()
    every_id = [job_id for batch in ids for job_id in batch]
    assert [job_id for (job_id,) in stored] == every_id
    assert len(set(every_id)) == 4 * size
    assert again == ids[1]


def test_migrate_works_through_the_pooler(
    pgbouncer_url: str, observer: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = "t_pooled_migrate"
    observer.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    try:
        # when: migrating twice, the second time on an up-to-date schema
        first = run_cli(capsys, pgbouncer_url, name, "migrate")
        second = run_cli(capsys, pgbouncer_url, name, "migrate")

        # then
        assert (first.code, second.code) == (0, 0), (first, second)
        exists = observer.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{name}.jobs",)
        ).fetchone()
        assert exists == (True,)
    finally:
        observer.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.slow
def test_worker_behind_the_pooler_with_a_listen_url_wakes_on_notify(
    pgbouncer_url: str,
    database_url: str,
    schema: str,
    pooled_app: App,
    observer: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a worker whose listener alone connects directly, from the environment
    monkeypatch.setenv("PGJOBS_LISTEN_DATABASE_URL", database_url)
    with WorkerProcess(pgbouncer_url, schema, *SLOW_POLL) as worker:
        worker.start().wait_ready()

        # when
        seconds = pickups(pooled_app, observer, schema, worker, count=5)

        # then: picked up at once, like a worker on a direct connection
        assert max(seconds) < 0.5, (seconds, worker.describe())
        assert PROBE_WARNING not in worker.logs()


@pytest.mark.slow
def test_worker_behind_the_pooler_without_a_listen_url_warns_and_polls_fast(
    pgbouncer_url: str, schema: str, pooled_app: App, observer: psycopg.Connection[Any]
) -> None:
    # given: a worker whose LISTEN goes through the transaction pooler
    with WorkerProcess(pgbouncer_url, schema, *SLOW_POLL) as worker:
        worker.start()

        # when
        wait_until(
            lambda: PROBE_WARNING in worker.logs(),
            timeout=40,
            message=lambda: f"no warning; {worker.describe()}",
        )
        seconds = pickups(pooled_app, observer, schema, worker, count=5)

        # then: one warning with the cause and the fix; jobs still run well within a second
        warnings = [line for line in worker.logs().splitlines() if PROBE_WARNING in line]
        assert len(warnings) == 1, worker.describe()
        assert "PgBouncer" in warnings[0]
        assert "--listen-database-url" in warnings[0]
        assert max(seconds) < 1.0, (seconds, worker.describe())


def test_work_rejects_a_listen_url_that_is_not_postgresql(
    database_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(
        capsys,
        database_url,
        schema,
        "work",
        "--app",
        "tests.worker_app:app",
        "--listen-database-url",
        "mysql://x@localhost/db",
    )

    assert result.code != 0
    assert "must start with postgresql://" in result.err
    assert "Traceback" not in result.err


def test_own_pool_prepares_statements_only_on_a_direct_connection(
    app: App, pooled_app: App, local_cluster: LocalCluster | None
) -> None:
    if local_cluster is None:
        # A server in a container is reached through a port mapping, which counts as pooled.
        pytest.skip("only the session's own local cluster is known to be reached directly")
    with app.database.transaction() as direct, pooled_app.database.transaction() as pooled:
        assert (direct.prepare_threshold, pooled.prepare_threshold) == (PREPARE_THRESHOLD, None)
