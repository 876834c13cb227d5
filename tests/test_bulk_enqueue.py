"""Large `enqueue_many` batches take a COPY path; they keep every promise of the small ones.

From `pgjobs.data.producer.COPY_THRESHOLD` rows on, plain jobs (no unique key, run_at or delay of
their own) are COPYed straight into the jobs table while later rows are still being
validated, with ids drawn first by `reserve_job_ids`; other batches are COPYed into a
temporary table and inserted from there. The tests run the same batch below and above
that size and expect the same result, and check what either path could break:
transactions (the caller's, an autocommit connection's, SQLAlchemy's), two batches in one
transaction, rollback, a bad row found after the COPY has begun.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pgjobs import App, PayloadNotSerializableError
from pgjobs.data.producer import COPY_THRESHOLD
from tests.helpers import jobs

BIG = COPY_THRESHOLD + 100


def keyed_batch(size: int) -> list[tuple[Any, ...]]:
    """`size` jobs: every 10th has a unique key "k<n // 20>" (so keys repeat in the batch),
    one holds the key "held", every 7th is delayed an hour."""
    items: list[tuple[Any, ...]] = []
    for n in range(size):
        options: dict[str, Any] = {}
        if n % 10 == 0:
            options["unique_key"] = f"k{n // 20}"
        if n % 7 == 0:
            options["delay"] = 3600
        if n == 3:
            options["unique_key"] = "held"
        items.append(("t", {"n": n}, options))
    return items


@pytest.mark.parametrize("size", [40, BIG], ids=["arrays", "copy"])
def test_batch_maps_keys_to_holders_and_keeps_order_and_delays(
    app: App, observer: psycopg.Connection[Any], schema: str, size: int
) -> None:
    held = app.enqueue(None, "t", {"n": -1}, unique_key="held")

    ids = app.enqueue_many(None, keyed_batch(size))

    stored = {row["payload"]["n"]: row for row in jobs(observer, schema)}
    first_of_key = {n: n - n % 20 for n in range(size) if n % 10 == 0}
    expected = [
        held if n == 3 else stored[first_of_key[n]]["id"] if n in first_of_key else stored[n]["id"]
        for n in range(size)
    ]
    assert ids == expected
    # Rows that lost their key to an earlier one were not inserted; the rest were, in order.
    inserted = sorted(n for n in stored if n >= 0)
    assert inserted == [n for n in range(size) if n != 3 and first_of_key.get(n, n) == n]
    assert [stored[n]["id"] for n in inserted] == sorted(stored[n]["id"] for n in inserted)
    delayed = stored[7]["run_at"] - stored[7]["created_at"]
    assert timedelta(minutes=59) < delayed < timedelta(minutes=61)
    assert stored[1]["run_at"] - stored[1]["created_at"] < timedelta(seconds=5)


def test_copy_batch_keeps_an_explicit_run_at(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    when = datetime(2031, 5, 4, 3, 2, 1, tzinfo=timezone.utc)
    items = [("t", {"n": n}, {"run_at": when} if n == 5 else {}) for n in range(BIG)]

    app.enqueue_many(None, items)

    assert {row["run_at"] for row in jobs(observer, schema) if row["payload"]["n"] == 5} == {when}


def test_two_copy_batches_in_one_transaction_roll_back_together(
    app: App, database_url: str, observer: psycopg.Connection[Any], schema: str
) -> None:
    with psycopg.connect(database_url) as conn:
        first = app.enqueue_many(conn, [("t", {"n": n}) for n in range(BIG)])
        second = app.enqueue_many(conn, [("t", {"n": n}) for n in range(BIG)])
        assert len(set(first + second)) == 2 * BIG
        assert jobs(observer, schema) == []  # nothing visible before commit
        conn.rollback()

    assert jobs(observer, schema) == []


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "staged"])
def test_copy_batch_on_an_autocommit_connection_commits_at_once(
    app: App, database_url: str, observer: psycopg.Connection[Any], schema: str, keyed: bool
) -> None:
    items = [("t", {"n": n}, {"unique_key": f"k{n}"} if keyed else {}) for n in range(BIG)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        ids = app.enqueue_many(conn, items)

        assert [row["id"] for row in jobs(observer, schema)] == ids
        # The temporary table went with the batch's own transaction.
        assert conn.execute("SELECT to_regclass('pg_temp.pgjobs_enqueue_staging')").fetchone() == (
            None,
        )


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    yield engine
    engine.dispose()


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_copy_batch_in_a_sqlalchemy_session_follows_its_transaction(
    app: App, engine: sa.Engine, observer: psycopg.Connection[Any], schema: str, commit: bool
) -> None:
    with Session(engine) as session:
        ids = app.enqueue_many(session, [("t", {"n": n}) for n in range(BIG)])
        if commit:
            session.commit()
        else:
            session.rollback()

    assert [row["id"] for row in jobs(observer, schema)] == (ids if commit else [])


def test_a_plain_batch_keeps_order_options_and_column_defaults(
    app: App, database_url: str, observer: psycopg.Connection[Any], schema: str
) -> None:
    items: list[tuple[Any, ...]] = [("t", {"n": n}) for n in range(BIG)]
    items[7] = ("t", {"n": 7}, {"queue": "mail", "priority": 5, "max_attempts": 2})
    with psycopg.connect(database_url) as conn:
        before = app.enqueue(conn, "t", {"n": -1})
        ids = app.enqueue_many(conn, items)
        after = app.enqueue(conn, "t", {"n": -2})
        conn.commit()

    assert before < ids[0] and ids == sorted(ids) and ids[-1] < after
    stored = {row["id"]: row for row in jobs(observer, schema)}
    assert [stored[job_id]["payload"] for job_id in ids] == [{"n": n} for n in range(BIG)]
    seventh = stored[ids[7]]
    assert (seventh["queue"], seventh["priority"], seventh["max_attempts"]) == ("mail", 5, 2)
    first = stored[ids[0]]
    assert (first["queue"], first["priority"], first["max_attempts"], first["state"]) == (
        "default",
        0,
        20,
        "available",
    )
    assert first["run_at"] == first["created_at"]  # the column default: due at once


@pytest.mark.parametrize("bad_at", [0, 4_999], ids=["first-row", "after-the-copy-streamed"])
def test_a_bad_row_in_a_plain_batch_writes_nothing_and_keeps_the_transaction(
    app: App, database_url: str, observer: psycopg.Connection[Any], schema: str, bad_at: int
) -> None:
    # The bad row comes after ~200 kB of good ones: the COPY has sent data by then.
    items: list[tuple[Any, ...]] = [("t", {"n": n, "pad": "x" * 30}) for n in range(5_000)]
    items[bad_at] = ("t", {"n": "\x00"})
    with psycopg.connect(database_url) as conn:
        kept = app.enqueue(conn, "t", {"n": -1})

        with pytest.raises(PayloadNotSerializableError, match="'n'"):
            app.enqueue_many(conn, items)

        # the caller's transaction goes on: its earlier job commits, no row of the batch
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.commit()
    assert [row["id"] for row in jobs(observer, schema)] == [kept]
