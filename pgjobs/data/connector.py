"""The connector: the one place where pgjobs' statements meet a connection.

A caller may hand pgjobs a psycopg connection or a SQLAlchemy Connection or Session,
synchronous or asyncio; the worker uses its own psycopg connections. Whichever it is,
a statement runs here, in the caller's transaction, and its rows come back as tuples
(`Rows`). A missing schema (a table or function that does not exist) is reported here,
once, as `SchemaNotMigratedError`. Nothing else in pgjobs touches a cursor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from typing import Any, Protocol

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from pgjobs.data.reused_cursor import reused_cursor
from pgjobs.data.steps import Atomic, CopyIn, Plan, Rows, Statement, Step, T, single
from pgjobs.errors import SchemaNotMigratedError

# Errors that mean the schema lacks what pgjobs needs: `pgjobs migrate` has not run.
_MISSING = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction)


class Connector(Protocol):
    """How one kind of synchronous connection runs each kind of step."""

    def rows(self, statement: Statement) -> Rows: ...
    def copy(self, step: CopyIn) -> None: ...
    def atomic(self) -> AbstractContextManager[Any]: ...


class AsyncConnector(Protocol):
    """How one kind of asyncio connection runs each kind of step."""

    async def rows(self, statement: Statement) -> Rows: ...
    async def copy(self, step: CopyIn) -> None: ...
    def atomic(self) -> Any: ...  # an async context manager


def run(conn: Any, schema: str, plan: Plan[T]) -> T:
    """Run `plan` on a caller's or pgjobs' own synchronous connection."""
    connector = connector_for(conn)
    with reporting_missing_schema(schema):
        return _drive(connector, plan)


def rows(conn: Any, schema: str, statement: Statement) -> Rows:
    """Run one statement; its rows."""
    return run(conn, schema, single(statement))


async def run_async(conn: Any, schema: str, plan: Plan[T]) -> T:
    """Run `plan` on a caller's or pgjobs' own asyncio connection."""
    connector = await async_connector_for(conn)
    with reporting_missing_schema(schema):
        return await _drive_async(connector, plan)


def _drive(connector: Connector, plan: Plan[T]) -> T:
    answer: Any = None
    while True:
        try:
            step: Step = plan.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Statement):
            answer = connector.rows(step)
        elif isinstance(step, CopyIn):
            connector.copy(step)
            answer = None
        else:
            with connector.atomic():
                answer = _drive(connector, step.plan)


async def _drive_async(connector: AsyncConnector, plan: Plan[T]) -> T:
    answer: Any = None
    while True:
        try:
            step: Step = plan.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Statement):
            answer = await connector.rows(step)
        elif isinstance(step, CopyIn):
            await connector.copy(step)
            answer = None
        elif isinstance(step, Atomic):
            async with connector.atomic():
                answer = await _drive_async(connector, step.plan)


@contextmanager
def reporting_missing_schema(schema: str) -> Iterator[None]:
    """Turn "relation does not exist" into the error that says to migrate."""
    try:
        yield
    except Exception as error:
        # SQLAlchemy wraps driver errors; unwrap the one case users can fix themselves.
        missing = error if isinstance(error, _MISSING) else getattr(error, "orig", None)
        if isinstance(missing, _MISSING):
            what = str(missing).strip().splitlines()[0]  # e.g. relation "s.jobs" does not exist
            raise SchemaNotMigratedError.for_schema(schema, what) from error
        raise


# --- psycopg ------------------------------------------------------------------------


def _returned_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement returned rows (`cur.description` would build its columns)."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _columns(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], named: bool) -> list[str]:
    return [column.name for column in cur.description or ()] if named else []


def _cursor(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], reuse: bool
) -> AbstractContextManager[Any]:
    """A tuple-row cursor for one statement, whatever row factory the connection has:
    its kept cursor when `reuse`, else a new one (dropped with its result)."""
    return reused_cursor(conn) if reuse else nullcontext(conn.cursor(row_factory=tuple_row))


def _in_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    return conn.info.transaction_status != pq.TransactionStatus.IDLE


class PsycopgConnector:
    """A psycopg Connection, used as it is (autocommit or in the caller's transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def rows(self, statement: Statement) -> Rows:
        with _cursor(self.conn, statement.reuse_cursor) as cur:
            cur.execute(statement.query, statement.params, binary=statement.binary)
            found = cur.fetchall() if _returned_rows(cur) else []
            return Rows(found, cur.rowcount, _columns(cur, statement.named))

    def copy(self, step: CopyIn) -> None:
        with self.conn.cursor() as cur, cur.copy(step.query) as copy:
            if step.types is not None:
                copy.set_types(step.types)
            for row in step.rows:
                copy.write_row(row)

    def atomic(self) -> AbstractContextManager[Any]:
        # A savepoint in a transaction, a transaction of its own in autocommit. Outside
        # autocommit with no transaction begun, `transaction()` would BEGIN and COMMIT
        # the caller's transaction: the steps join the one they begin instead.
        if self.conn.autocommit or _in_transaction(self.conn):
            return self.conn.transaction()
        return nullcontext()


class AsyncPsycopgConnector:
    """A psycopg AsyncConnection, used as it is."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def rows(self, statement: Statement) -> Rows:
        with _cursor(self.conn, statement.reuse_cursor) as cur:
            await cur.execute(statement.query, statement.params, binary=statement.binary)
            found = await cur.fetchall() if _returned_rows(cur) else []
            return Rows(found, cur.rowcount, _columns(cur, statement.named))

    async def copy(self, step: CopyIn) -> None:
        async with self.conn.cursor() as cur, cur.copy(step.query) as copy:
            if step.types is not None:
                copy.set_types(step.types)
            for row in step.rows:
                await copy.write_row(row)

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[None]:
        if self.conn.autocommit or _in_transaction(self.conn):
            async with self.conn.transaction():
                yield
        else:
            yield


# --- SQLAlchemy -----------------------------------------------------------------------


def _require_psycopg_driver(sa_conn: Any) -> None:
    """pgjobs' statements are psycopg's (`psycopg.sql`), so SQLAlchemy must drive psycopg."""
    if sa_conn.dialect.driver != "psycopg":
        raise TypeError(
            "pgjobs needs SQLAlchemy's psycopg 3 driver (postgresql+psycopg://...); "
            f"this engine uses {sa_conn.dialect.driver!r}"
        )


def _plain_params(params: Any) -> Any:
    """Parameters as `exec_driver_sql` takes them for one execution: a dict, or a tuple
    (a list would mean many executions)."""
    if params is None:
        return None
    return dict(params) if hasattr(params, "keys") else tuple(params)


def _sa_rows(result: Any, named: bool) -> Rows:
    if not result.returns_rows:
        return Rows([], result.rowcount)
    return Rows(
        map(tuple, result.fetchall()), result.rowcount, list(result.keys()) if named else ()
    )


class SQLAlchemyConnector:
    """A SQLAlchemy Connection (a Session's, joined), running pgjobs' statements on its
    psycopg driver connection inside its transaction."""

    def __init__(self, sa_conn: Any) -> None:
        _require_psycopg_driver(sa_conn)
        self.sa_conn = sa_conn

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection, inside the SQLAlchemy transaction (begun if need be)."""
        if not self.sa_conn.in_transaction():
            self.sa_conn.begin()
        raw: psycopg.Connection[Any] = self.sa_conn.connection.driver_connection
        return raw

    def rows(self, statement: Statement) -> Rows:
        query = statement.query.as_string(self.sa_conn.connection.driver_connection)
        result = self.sa_conn.exec_driver_sql(query, _plain_params(statement.params))
        return _sa_rows(result, statement.named)

    def copy(self, step: CopyIn) -> None:
        PsycopgConnector(self.raw).copy(step)

    def atomic(self) -> AbstractContextManager[Any]:
        return PsycopgConnector(self.raw).atomic()


class AsyncSQLAlchemyConnector:
    """A SQLAlchemy AsyncConnection (an AsyncSession's, joined)."""

    def __init__(self, sa_conn: Any) -> None:
        _require_psycopg_driver(sa_conn)
        self.sa_conn = sa_conn

    def _driver_connection(self) -> psycopg.AsyncConnection[Any]:
        raw: psycopg.AsyncConnection[Any] = (
            self.sa_conn.sync_connection.connection.driver_connection
        )
        return raw

    async def _raw(self) -> AsyncPsycopgConnector:
        """The psycopg connection, inside the SQLAlchemy transaction (begun if need be)."""
        if not self.sa_conn.in_transaction():
            await self.sa_conn.begin()
        return AsyncPsycopgConnector(self._driver_connection())

    async def rows(self, statement: Statement) -> Rows:
        query = statement.query.as_string(self._driver_connection())
        result = await self.sa_conn.exec_driver_sql(query, _plain_params(statement.params))
        return _sa_rows(result, statement.named)

    async def copy(self, step: CopyIn) -> None:
        await (await self._raw()).copy(step)

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[None]:
        async with (await self._raw()).atomic():
            yield


# --- choosing the connector -------------------------------------------------------------

# Other kinds of synchronous connections, made known by an integration
# (pgjobs.contrib.django): each function returns the psycopg connection under a connection
# it knows, in that connection's transaction, or None for one it does not know.
_unwrappers: list[Callable[[Any], psycopg.Connection[Any] | None]] = []


def register_unwrapper(unwrap: Callable[[Any], psycopg.Connection[Any] | None]) -> None:
    """Accept another kind of caller's connection (once per function)."""
    if unwrap not in _unwrappers:
        _unwrappers.append(unwrap)


def connector_for(conn: Any) -> Connector:
    """The connector of a synchronous connection; TypeError for anything else."""
    if isinstance(conn, psycopg.Connection):
        return PsycopgConnector(conn)
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(conn, Session):
        return SQLAlchemyConnector(conn.connection())  # joins (or begins) its transaction
    if isinstance(conn, Connection):
        return SQLAlchemyConnector(conn)
    for unwrap in _unwrappers:
        raw = unwrap(conn)
        if raw is not None:
            return PsycopgConnector(raw)
    raise TypeError(
        "conn must be a psycopg Connection, a SQLAlchemy Connection or Session, "
        f"or None; got {type(conn).__name__}"
    )


async def async_connector_for(conn: Any) -> AsyncConnector:
    """The connector of an asyncio connection; TypeError for anything else."""
    if isinstance(conn, psycopg.AsyncConnection):
        return AsyncPsycopgConnector(conn)
    sa_conn = await _sqlalchemy_async_connection(conn)
    if sa_conn is None:
        raise TypeError(
            "conn must be a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or "
            f"AsyncSession, or None; got {type(conn).__name__} (a synchronous connection "
            "takes enqueue, not enqueue_async)"
        )
    return AsyncSQLAlchemyConnector(sa_conn)


async def _sqlalchemy_async_connection(conn: Any) -> Any | None:
    """The SQLAlchemy AsyncConnection behind `conn` (one, or an AsyncSession), else None."""
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # no greenlet: then `conn` cannot be one of them
        return None
    if isinstance(conn, AsyncSession):
        return await conn.connection()  # joins (or begins) the session's transaction
    if isinstance(conn, AsyncConnection):
        return conn
    return None


def caller_psycopg_connection(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg connection under a caller's synchronous connection, inside the
    caller's transaction, so that the worker's statements (claim, outcomes) can run in a
    test's own transaction (`pgjobs.testing`)."""
    connector = connector_for(conn)
    if isinstance(connector, SQLAlchemyConnector):
        return connector.raw
    assert isinstance(connector, PsycopgConnector)
    return connector.conn
