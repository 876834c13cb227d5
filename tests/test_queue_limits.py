"""Back-pressure: `pgjobs queue limit` and `pgjobs.QueueFull` at enqueue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
import pgjobs.queue_limits as queue_limits_module
from pgjobs import App, QueueFull
from pgjobs.data import producer as producer_data
from pgjobs.data.connector import run as run_plan
from pgjobs.data.producer import COPY_THRESHOLD, COUNT_WAITING, count_waiting
from pgjobs.data.sql import SchemaSQL
from pgjobs.data.steps import Plan
from pgjobs.queue_control import set_queue_limit
from pgjobs.queue_limits import QueueLimits
from tests.helpers import completed, job_ids, make_job, run_cli, update_job

Capsys = pytest.CaptureFixture[str]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Reads:
    """The reads the limit check made: of the limits, and counts of waiting jobs."""

    limit_reads: int = 0
    counts: int = 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """The limit check's reads, counted as they happen (the real statements run)."""
    seen = Reads()

    def counting_limits(sql: SchemaSQL) -> Plan[dict[str, int]]:
        seen.limit_reads += 1
        return (yield from producer_data.queue_limits(sql))

    def counting_count(sql: SchemaSQL, queue: str, *, up_to: int) -> Plan[int]:
        seen.counts += 1
        return (yield from producer_data.count_waiting(sql, queue, up_to=up_to))

    monkeypatch.setattr(queue_limits_module, "queue_limits", counting_limits)
    monkeypatch.setattr(queue_limits_module, "count_waiting", counting_count)
    return seen


@pytest.fixture
def clock(app: App) -> Clock:
    """The App's limit check on a hand-moved clock."""
    moved = Clock()
    app.queue_limits = QueueLimits(clock=moved)
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


def test_a_queue_without_a_limit_costs_one_read_a_second(
    app: App, clock: Clock, reads: Reads
) -> None:
    store = reads

    for _ in range(50):
        app.enqueue(None, "send", {})
    assert (store.limit_reads, store.counts) == (1, 0)

    clock.now += 1.0
    app.enqueue(None, "send", {})
    assert (store.limit_reads, store.counts) == (2, 0)


def test_the_count_is_taken_at_most_once_a_second_and_may_be_that_stale(
    app: App, clock: Clock, reads: Reads, observer: psycopg.Connection[Any], schema: str
) -> None:
    store = reads
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


def test_without_a_connection_the_check_and_the_insert_share_one_transaction(
    app: App, clock: Clock, reads: Reads, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a limited queue, and every transaction pgjobs' own pool opens counted
    set_queue_limit(app, "mail", 5)
    opened = []
    transaction = type(app.database).transaction

    def counted(database: Any) -> Any:
        opened.append(database)
        return transaction(database)

    monkeypatch.setattr(type(app.database), "transaction", counted)
    # when: a job is enqueued with conn=None, its limit and count read afresh
    app.enqueue(None, "send", {}, queue="mail")
    # then: both reads and the insert ran in one transaction of the pool
    assert (reads.limit_reads, reads.counts) == (1, 1)
    assert len(opened) == 1


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
        ).format(sql.Identifier(schema, "jobs_live"))
    )
    observer.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, "jobs_live")))
    params = {"queue": "mail", "up_to": 10}

    plan = observer.execute(
        sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + app.data.sql.render(COUNT_WAITING), params
    ).fetchone()
    assert plan is not None

    scans = list(_scans(plan[0][0]["Plan"]))
    assert scans, plan
    assert all(node["Actual Rows"] <= 10 for node in scans), scans
    assert run_plan(observer, schema, count_waiting(app.data.sql, "mail", up_to=10)) == 10


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
        assert result.err == (
            "pgjobs: error: give --max-waiting N, --max-running N (or both), or --none\n"
        )
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
