"""Large `enqueue_many` batches take the COPY path; they keep every promise of the small ones.

`pgjobs.store.COPY_THRESHOLD` rows or more are COPYed into a temporary table and inserted
from there. The tests run the same batch below and above that size and expect the same
result, and check what the temporary table could break: transactions (the caller's, an
autocommit connection's, SQLAlchemy's), two batches in one transaction, rollback.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pgjobs import App
from pgjobs.store import COPY_THRESHOLD
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


def test_copy_batch_on_an_autocommit_connection_commits_at_once(
    app: App, database_url: str, observer: psycopg.Connection[Any], schema: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        ids = app.enqueue_many(conn, [("t", {"n": n}) for n in range(BIG)])

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
