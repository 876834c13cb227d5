"""Back-pressure: `pgjobs queue limit` and `pgjobs.QueueFull` at enqueue."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
from pgjobs import App, QueueFull
from pgjobs.queue_control import set_queue_limit
from pgjobs.queue_limits import QueueLimits
from pgjobs.store import COPY_THRESHOLD, Store
from tests.helpers import completed, job_ids, make_job, run_cli, update_job

Capsys = pytest.CaptureFixture[str]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(Store):
    """A real Store that counts the reads the limit check makes."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.limit_reads = 0
        self.counts = 0

    def queue_limits(self, conn: Any) -> dict[str, int]:
        self.limit_reads += 1
        return super().queue_limits(conn)

    def count_waiting(self, conn: Any, queue: str, *, up_to: int) -> int:
        self.counts += 1
        return super().count_waiting(conn, queue, up_to=up_to)


@pytest.fixture
def clock(app: App) -> Clock:
    """The App's limit check on a hand-moved clock, with its reads counted."""
    moved = Clock()
    app.queue_limits = QueueLimits(clock=moved)
    app.store = CountingStore(app.schema)
    return moved


def test_queue_full_is_a_public_pgjobs_error() -> None:
    assert pgjobs.QueueFull is QueueFull
    assert issubclass(QueueFull, pgjobs.PgJobsError)


def test_enqueue_into_a_full_queue_raises_and_writes_nothing(
    app: App, observer: psycopg.Connection[Any], schema: str, capsys: Capsys, database_url: str
) -> None:
    result = run_cli(capsys, database_url, schema, "queue", "limit", "mail", "--max-waiting", "3")
    assert result.code == 0, result.err
    for n in range(3):
        app.enqueue(None, "send", {"n": n}, queue="mail")

    with pytest.raises(QueueFull) as raised:
        app.enqueue(None, "send", {"n": 3}, queue="mail")

    assert (raised.value.queue, raised.value.max_waiting, raised.value.waiting) == ("mail", 3, 3)
    assert "queue 'mail' is full" in str(raised.value)
    assert len(job_ids(observer, schema)) == 3


def test_a_full_queue_refuses_inside_the_callers_transaction_too(
    app: App, conn: psycopg.Connection[Any], observer: psycopg.Connection[Any], schema: str
) -> None:
    set_queue_limit(app, "mail", 1)
    app.enqueue(conn, "send", {}, queue="mail")
    conn.commit()

    with pytest.raises(QueueFull):
        app.enqueue(conn, "send", {}, queue="mail")
    conn.rollback()

    assert len(job_ids(observer, schema)) == 1


def test_other_queues_are_not_limited(app: App, observer: psycopg.Connection[Any]) -> None:
    set_queue_limit(app, "mail", 0)

    app.enqueue(None, "send", {}, queue="default")

    with pytest.raises(QueueFull):
        app.enqueue(None, "send", {}, queue="mail")


def test_enqueue_many_is_all_or_nothing(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    set_queue_limit(app, "mail", 5)
    app.enqueue_many(None, [("send", {"n": n}, {"queue": "mail"}) for n in range(3)])

    too_many = [("send", {"n": n}, {"queue": "mail"}) for n in range(3)]
    too_many.insert(0, ("send", {"n": -1}, {"queue": "default"}))
    with pytest.raises(QueueFull):
        app.enqueue_many(None, too_many)
    assert len(job_ids(observer, schema)) == 3

    app.enqueue_many(None, [("send", {"n": n}, {"queue": "mail"}) for n in range(2)])
    assert len(job_ids(observer, schema)) == 5


def test_a_large_batch_is_checked_against_the_limit_too(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # A large batch of plain jobs takes the COPY path, which skips the check only when
    # no queue has a limit.
    set_queue_limit(app, "mail", COPY_THRESHOLD)
    batch = [("send", {"n": n}, {"queue": "mail"}) for n in range(COPY_THRESHOLD + 1)]

    with pytest.raises(QueueFull):
        app.enqueue_many(None, batch)

    assert job_ids(observer, schema) == []
    assert len(app.enqueue_many(None, batch[:COPY_THRESHOLD])) == COPY_THRESHOLD


def test_only_waiting_jobs_count_towards_the_limit(
    app: App, observer: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    for _ in range(3):
        make_job(app, observer, queue="mail", **completed())
    set_queue_limit(app, "mail", 2)
    producer = App(database_url, schema=schema)

    producer.enqueue(None, "send", {}, queue="mail")
    producer.enqueue(None, "send", {}, queue="mail")

    with pytest.raises(QueueFull):
        producer.enqueue(None, "send", {}, queue="mail")
    producer.close()


def test_a_queue_without_a_limit_costs_one_read_a_second(app: App, clock: Clock) -> None:
    store = app.store
    assert isinstance(store, CountingStore)

    for _ in range(50):
        app.enqueue(None, "send", {})
    assert (store.limit_reads, store.counts) == (1, 0)

    clock.now += 1.0
    app.enqueue(None, "send", {})
    assert (store.limit_reads, store.counts) == (2, 0)


def test_the_count_is_taken_at_most_once_a_second_and_may_be_that_stale(
    app: App, clock: Clock, observer: psycopg.Connection[Any], schema: str
) -> None:
    store = app.store
    assert isinstance(store, CountingStore)
    set_queue_limit(app, "mail", 2)
    first = app.enqueue(None, "send", {}, queue="mail")
    app.enqueue(None, "send", {}, queue="mail")
    assert store.counts == 1  # the second enqueue was counted in, not counted again
    update_job(observer, schema, first, **completed())  # a worker made room

    with pytest.raises(QueueFull):
        app.enqueue(None, "send", {}, queue="mail")  # the count is under a second old

    clock.now += 1.0
    app.enqueue(None, "send", {}, queue="mail")
    assert store.counts == 2


def test_a_new_limit_applies_within_a_second(app: App, clock: Clock) -> None:
    app.enqueue(None, "send", {}, queue="mail")
    set_queue_limit(app, "mail", 1)
    app.enqueue(None, "send", {}, queue="mail")  # limits read under a second ago

    clock.now += 1.0
    with pytest.raises(QueueFull):
        app.enqueue(None, "send", {}, queue="mail")


def test_the_count_reads_no_more_index_entries_than_the_limit(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (queue, task) SELECT 'mail', 'send' FROM generate_series(1, 20000)"
        ).format(sql.Identifier(schema, "jobs"))
    )
    observer.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, "jobs")))
    params = {"queue": "mail", "up_to": 10}

    plan = observer.execute(
        sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + app.store.queries.count_waiting, params
    ).fetchone()
    assert plan is not None

    scans = list(_scans(plan[0][0]["Plan"]))
    assert scans, plan
    assert all(node["Actual Rows"] <= 10 for node in scans), scans
    assert app.store.count_waiting(observer, "mail", up_to=10) == 10


def _scans(node: dict[str, Any]) -> Any:
    if "Scan" in node["Node Type"]:
        yield node
    for child in node.get("Plans", []):
        yield from _scans(child)


def test_limit_takes_either_a_number_or_none(
    capsys: Capsys, database_url: str, schema: str
) -> None:
    neither = run_cli(capsys, database_url, schema, "queue", "limit", "mail")
    both = run_cli(
        capsys, database_url, schema, "queue", "limit", "mail", "--max-waiting", "3", "--none"
    )
    negative = run_cli(
        capsys, database_url, schema, "queue", "limit", "mail", "--max-waiting", "-1"
    )

    for result in (neither, both):
        assert result.code == 1
        assert result.err == "pgjobs: error: give either --max-waiting N or --none\n"
    assert negative.code == 1
    assert "max_waiting must be an integer from 0" in negative.err


def test_limit_none_removes_the_limit(
    app: App, capsys: Capsys, database_url: str, schema: str
) -> None:
    set_queue_limit(app, "mail", 0)

    result = run_cli(capsys, database_url, schema, "queue", "limit", "mail", "--none")

    assert (result.code, result.out) == (0, "queue 'mail' has no limit\n")
    producer = App(database_url, schema=schema)
    producer.enqueue(None, "send", {}, queue="mail")
    producer.close()
