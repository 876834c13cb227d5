"""Enqueue from async code: the job commits or rolls back with the caller's async
transaction (psycopg AsyncConnection, SQLAlchemy AsyncConnection or AsyncSession), and
`conn=None` commits at once on pgjobs' own asyncio pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from pgjobs import (
    App,
    DatabaseUnavailableError,
    InvalidJobError,
    PayloadNotSerializableError,
    QueueFull,
    SchemaNotMigratedError,
)
from pgjobs.data.connector import AsyncPsycopgConnector
from pgjobs.data.producer import COPY_THRESHOLD
from pgjobs.data.sql import STAGING_TABLE
from pgjobs.data.steps import CopyIn
from pgjobs.queue_control import set_queue_limit
from tests.helpers import UNREACHABLE_URL, jobs, terminate_client_backends, wait_until

T = TypeVar("T")
KINDS = ["psycopg", "sqlalchemy-connection", "sqlalchemy-session"]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one test's async part on a loop of its own, as an application would."""
    return asyncio.run(coroutine)


@dataclass
class Caller:
    """An application's async transaction: what it passes to pgjobs, and its own calls."""

    conn: Any
    execute: Callable[[str], Awaitable[object]]
    commit: Callable[[], Awaitable[None]]
    rollback: Callable[[], Awaitable[None]]


@asynccontextmanager
async def caller(kind: str, url: str) -> AsyncIterator[Caller]:
    """An open async connection of `kind`, in a transaction."""
    if kind == "psycopg":
        async with await psycopg.AsyncConnection.connect(url) as conn:
            yield Caller(conn, conn.execute, conn.commit, conn.rollback)
        return
    engine = create_async_engine(
        "postgresql+psycopg://",
        async_creator=lambda: psycopg.AsyncConnection.connect(url),
        poolclass=sa.NullPool,
    )
    try:
        if kind == "sqlalchemy-connection":
            async with engine.connect() as connection:
                yield Caller(
                    connection,
                    lambda text: connection.execute(sa.text(text)),
                    connection.commit,
                    connection.rollback,
                )
        else:
            async with AsyncSession(engine) as session:
                yield Caller(
                    session,
                    lambda text: session.execute(sa.text(text)),
                    session.commit,
                    session.rollback,
                )
    finally:
        await engine.dispose()


@pytest.fixture
def orders(observer: psycopg.Connection[Any], schema: str) -> str:
    """An application table, `<schema>.orders`; the INSERT the tests' callers run."""
    table = sql.Identifier(schema, "orders")
    observer.execute(sql.SQL("CREATE TABLE {} (note text)").format(table))
    return sql.SQL("INSERT INTO {} VALUES ('paid')").format(table).as_string(observer)


def committed_orders(observer: psycopg.Connection[Any], schema: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "orders"))
    row = observer.execute(query).fetchone()
    return row[0] if row else 0


@pytest.mark.parametrize("kind", KINDS)
def test_async_enqueue_commits_with_the_callers_data(
    app: App, database_url: str, orders: str, observer: Any, schema: str, kind: str
) -> None:
    @app.task(name="email.send", queue="mail")
    async def send_email(to: str) -> None: ...

    async def scenario() -> int:
        async with caller(kind, database_url) as db:
            await db.execute(orders)
            job_id = await send_email.enqueue_async(db.conn, to="a@example.com")
            assert jobs(observer, schema) == []  # invisible until the commit
            await db.commit()
            return job_id

    job_id = run(scenario())

    [job] = jobs(observer, schema)
    assert (job["id"], job["task"], job["queue"]) == (job_id, "email.send", "mail")
    assert job["payload"] == {"to": "a@example.com"}
    assert committed_orders(observer, schema) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_rolled_back_async_enqueue_leaves_no_job(
    app: App, database_url: str, orders: str, observer: Any, schema: str, kind: str
) -> None:
    async def scenario() -> None:
        async with caller(kind, database_url) as db:
            await db.execute(orders)
            await app.enqueue_async(db.conn, "email.send", {"to": "a@example.com"})
            await db.rollback()

    run(scenario())

    assert jobs(observer, schema) == []
    assert committed_orders(observer, schema) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_enqueue_many_async_returns_ids_in_input_order(
    app: App, database_url: str, observer: Any, schema: str, kind: str
) -> None:
    items: list[Any] = [("t", {"n": n}) for n in range(3)]
    items.append(("t", {"n": 3}, {"queue": "other", "priority": 7}))

    async def scenario() -> list[int]:
        async with caller(kind, database_url) as db:
            ids = await app.enqueue_many_async(db.conn, items)
            await db.commit()
            return ids

    ids = run(scenario())

    rows = jobs(observer, schema)
    assert [row["id"] for row in rows] == ids
    assert [row["payload"]["n"] for row in rows] == [0, 1, 2, 3]
    assert (rows[3]["queue"], rows[3]["priority"]) == ("other", 7)


def test_async_enqueue_without_connection_commits_at_once(
    app: App, observer: Any, schema: str
) -> None:
    async def scenario() -> list[int]:
        try:
            one = await app.enqueue_async(None, "t", {"n": 1}, delay=60)
            many = await app.enqueue_many_async(None, [("t", {"n": 2}), ("t", {"n": 3})])
            return [one, *many]
        finally:
            await app.aclose()

    ids = run(scenario())

    assert [row["id"] for row in jobs(observer, schema)] == ids


def test_own_async_pool_serves_one_event_loop_after_another(
    app: App, observer: Any, schema: str
) -> None:
    # Each asyncio.run is a new loop; a pool opened in the first must not serve the second.
    first = run(app.enqueue_async(None, "t", {"n": 1}))
    second = run(app.enqueue_async(None, "t", {"n": 2}))
    run(app.aclose())

    assert [row["id"] for row in jobs(observer, schema)] == [first, second]


def client_backends(observer: Any) -> int:
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()
    count: int = row[0]
    return count


def test_each_event_loop_closes_its_own_pool_when_it_ends(app: App, observer: Any) -> None:
    # given: the server's connections before
    before = client_backends(observer)

    # when: a program runs thirty event loops one after another, each enqueueing a job
    # through pgjobs' own pool (its pool of the loop)
    for n in range(30):
        run(app.enqueue_async(None, "t", {"n": n}))

    # then: every loop closed its pool as it ended; none left connections behind (each
    # kept one or two open, with its loop, for the life of the program)
    wait_until(
        lambda: client_backends(observer) <= before,
        10,
        message=lambda: f"{client_backends(observer)} connections, {before} before",
    )


def test_an_idle_connection_the_server_dropped_is_replaced(app: App, database_url: str) -> None:
    async def scenario() -> list[int]:
        first = await app.enqueue_async(None, "t", {"n": 1})
        # the server ends every other session: this loop's idle connection among them
        terminate_client_backends(database_url)
        second = await app.enqueue_async(None, "t", {"n": 2})
        return [first, second]

    ids = run(scenario())

    with psycopg.connect(database_url, autocommit=True) as observer:
        assert [row["id"] for row in jobs(observer, app.schema)] == ids


def test_async_enqueue_without_connection_to_an_unreachable_server_says_so() -> None:
    app = App(UNREACHABLE_URL, database_wait=1.0)

    with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
        run(app.enqueue_async(None, "t", {}))


def test_async_unique_key_returns_the_holder_and_inserts_nothing(
    app: App, database_url: str, observer: Any, schema: str
) -> None:
    async def scenario() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            first = await app.enqueue_async(conn, "t", {"n": 1}, unique_key="k")
            again = await app.enqueue_async(conn, "t", {"n": 2}, unique_key="k")
            many = await app.enqueue_many_async(conn, [("t", {}, {"unique_key": "k"})])
            await conn.commit()
            return [first, again, *many]

    first, again, from_many = run(scenario())

    assert first == again == from_many
    assert len(jobs(observer, schema)) == 1


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda app, conn: app.enqueue_async(conn, "t", {"when": object()}), TypeError),
        (lambda app, conn: app.enqueue_async(conn, "t", {}, delay=-1), InvalidJobError),
        (lambda app, conn: app.enqueue_async(conn, "", {}), InvalidJobError),
        (
            lambda app, conn: app.enqueue_many_async(conn, [("t", {}), ("t", {"x": "\x00"})]),
            PayloadNotSerializableError,
        ),
        (lambda app, conn: app.enqueue_async(conn, "typed", {"wrong": 1}), InvalidJobError),
    ],
)
def test_invalid_async_enqueue_raises_before_anything_is_sent(
    app: App, database_url: str, observer: Any, schema: str, call: Any, error: type[Exception]
) -> None:
    @app.task(name="typed")
    async def typed(n: int) -> None: ...

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            with pytest.raises(error):
                await call(app, conn)
            # Nothing was sent, so the caller's transaction is still usable.
            cursor = await conn.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
            await conn.commit()

    run(scenario())

    assert jobs(observer, schema) == []


def test_async_enqueue_wakes_listeners_on_commit(
    app: App, database_url: str, observer: Any
) -> None:
    observer.execute(sql.SQL("LISTEN {}").format(sql.Identifier(app.data.sql.channel)))

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await app.enqueue_async(conn, "t", {}, queue="mail")
            assert list(observer.notifies(timeout=0.2, stop_after=1)) == []
            await conn.commit()

    run(scenario())

    [notification] = observer.notifies(timeout=10, stop_after=1)
    assert notification.payload == "mail"


@pytest.mark.parametrize("not_async", ["sync-connection", "text"])
def test_enqueue_async_refuses_what_is_not_an_async_connection(
    app: App, conn: psycopg.Connection[Any], not_async: str
) -> None:
    given = conn if not_async == "sync-connection" else "postgresql://localhost/db"

    with pytest.raises(TypeError, match="AsyncConnection"):
        run(app.enqueue_async(given, "t", {}))


def test_async_enqueue_into_an_unmigrated_schema_says_to_migrate(database_url: str) -> None:
    app = App(database_url, schema="never_migrated_for_asyncio")

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await app.enqueue_async(conn, "t", {})

    with pytest.raises(SchemaNotMigratedError, match="pgjobs migrate"):
        run(scenario())


def test_task_options_apply_to_async_enqueue(
    app: App, database_url: str, observer: Any, schema: str
) -> None:
    @app.task(queue="reports", priority=3, max_attempts=4)
    async def build(report: int) -> None: ...

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await build.options(priority=9, delay=30).enqueue_async(conn, report=1)
            await conn.commit()

    run(scenario())

    [job] = jobs(observer, schema)
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("reports", 9, 4)
    assert job["run_at"] > job["created_at"]


@pytest.mark.parametrize("kind", [*KINDS, "own-pool"])
def test_async_enqueue_into_a_full_queue_raises_queue_full_and_writes_nothing(
    app: App, database_url: str, observer: Any, schema: str, kind: str
) -> None:
    set_queue_limit(app, "mail", 2)
    app.enqueue_many(None, [("t", {"n": n}, {"queue": "mail"}) for n in range(2)])

    async def scenario() -> None:
        if kind == "own-pool":
            try:
                await app.enqueue_async(None, "t", {}, queue="mail")
            finally:
                await app.aclose()
            return
        async with caller(kind, database_url) as db:
            await app.enqueue_many_async(db.conn, [("t", {}, {"queue": "mail"})])

    with pytest.raises(QueueFull) as raised:
        run(scenario())

    assert (raised.value.queue, raised.value.max_waiting) == ("mail", 2)
    assert len(jobs(observer, schema)) == 2


# Large batches: from COPY_THRESHOLD jobs on, plain batches are COPYed straight into `jobs`
# and other batches through a temporary table, as from sync code (tests/test_bulk_enqueue.py).
BIG = COPY_THRESHOLD + 100


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The COPY paths the async bulk enqueues took, by name, in order."""
    taken: list[str] = []
    original = AsyncPsycopgConnector.copy

    async def spy(self: AsyncPsycopgConnector, step: CopyIn) -> None:
        staged = STAGING_TABLE in step.query.as_string()
        taken.append("through a staging table" if staged else "straight into jobs")
        await original(self, step)

    monkeypatch.setattr(AsyncPsycopgConnector, "copy", spy)
    return taken


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_large_async_batch_is_copied_in_the_callers_transaction(
    app: App,
    database_url: str,
    observer: Any,
    schema: str,
    copies: list[str],
    kind: str,
    commit: bool,
) -> None:
    items: list[Any] = [("t", {"n": n}) for n in range(BIG)]
    items[7] = ("t", {"n": 7}, {"queue": "mail", "priority": 5, "max_attempts": 2})

    async def scenario() -> list[int]:
        async with caller(kind, database_url) as db:
            before = await app.enqueue_async(db.conn, "t", {"n": -1})
            ids = await app.enqueue_many_async(db.conn, items)
            assert jobs(observer, schema) == []  # nothing visible before the commit
            await (db.commit() if commit else db.rollback())
            return [before, *ids]

    before, *ids = run(scenario())

    assert copies == ["straight into jobs"]
    stored = {row["id"]: row for row in jobs(observer, schema)}
    if not commit:
        assert stored == {}
        return
    assert before < ids[0] and ids == sorted(ids) and len(stored) == BIG + 1
    assert [stored[job_id]["payload"] for job_id in ids] == [{"n": n} for n in range(BIG)]
    seventh = stored[ids[7]]
    assert (seventh["queue"], seventh["priority"], seventh["max_attempts"]) == ("mail", 5, 2)
    first = stored[ids[0]]
    assert (first["queue"], first["max_attempts"], first["state"]) == ("default", 20, "available")
    assert first["run_at"] == first["created_at"]  # the column default: due at once


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_row_in_a_large_async_batch_writes_nothing_and_keeps_the_transaction(
    app: App, database_url: str, observer: Any, schema: str, copies: list[str], kind: str
) -> None:
    # The bad row comes after ~200 kB of good ones: the COPY has sent data by then.
    items: list[Any] = [("t", {"n": n, "pad": "x" * 30}) for n in range(5_000)]
    items[4_999] = ("t", {"n": "\x00"})

    async def scenario() -> int:
        async with caller(kind, database_url) as db:
            kept = await app.enqueue_async(db.conn, "t", {"n": -1})
            with pytest.raises(PayloadNotSerializableError, match="'n'"):
                await app.enqueue_many_async(db.conn, items)
            await db.execute("SELECT 1")  # the caller's transaction goes on
            await db.commit()
            return kept

    kept = run(scenario())

    assert copies == ["straight into jobs"]
    assert [row["id"] for row in jobs(observer, schema)] == [kept]


@pytest.mark.parametrize("kind", [*KINDS, "autocommit"])
def test_a_large_keyed_async_batch_maps_keys_to_their_holders(
    app: App, database_url: str, observer: Any, schema: str, copies: list[str], kind: str
) -> None:
    held = app.enqueue(None, "t", {"n": -1}, unique_key="k0")
    # Jobs 2k and 2k+1 share the key k<k>; every 7th is delayed an hour.
    items: list[Any] = [
        ("t", {"n": n}, {"unique_key": f"k{n // 2}", **({"delay": 3600} if n % 7 == 0 else {})})
        for n in range(BIG)
    ]

    async def scenario() -> list[int]:
        if kind == "autocommit":  # the batch commits at once, in a transaction of its own
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                return await app.enqueue_many_async(conn, items)
        async with caller(kind, database_url) as db:
            ids = await app.enqueue_many_async(db.conn, items)
            await db.commit()
            return ids

    ids = run(scenario())

    assert copies == ["through a staging table"]
    stored = {row["payload"]["n"]: row for row in jobs(observer, schema)}
    assert ids[:2] == [held, held]
    assert ids[2:] == [stored[n - n % 2]["id"] for n in range(2, BIG)]
    assert sorted(stored) == [-1, *range(2, BIG, 2)]
    delayed = stored[14]["run_at"] - stored[14]["created_at"]
    assert 3540 < delayed.total_seconds() < 3660


def test_async_enqueue_works_on_a_connection_whose_rows_are_dicts(
    app: App, database_url: str, observer: Any, schema: str
) -> None:
    """As from sync code: pgjobs reads its rows as tuples whatever the connection's row
    factory, on every path (one job, a keyed one and its holder, a small batch, a batch
    COPYed straight in, a keyed batch COPYed through the temporary table)."""

    async def scenario() -> list[int]:
        factory = psycopg.rows.dict_row
        async with await psycopg.AsyncConnection.connect(database_url, row_factory=factory) as conn:
            one = await app.enqueue_async(conn, "t", {"n": 0})
            keyed = await app.enqueue_async(conn, "t", {"n": 1}, unique_key="k")
            holder = await app.enqueue_async(conn, "t", {"n": 2}, unique_key="k")
            assert holder == keyed
            small = await app.enqueue_many_async(conn, [("t", {"n": 3}), ("t", {"n": 4})])
            large = await app.enqueue_many_async(conn, [("t", {"n": 5})] * BIG)
            staged = await app.enqueue_many_async(
                conn, [("t", {"n": 6}, {"unique_key": f"s{n}"}) for n in range(BIG)]
            )
            await conn.commit()
            return [one, keyed, *small, *large, *staged]

    ids = run(scenario())

    assert [row["id"] for row in jobs(observer, schema)] == ids
