"""The test's own connection, in the places where pgjobs would open its own.

A test that rolls back at the end must keep everything on one connection: the jobs its
code enqueues, the worker's claim and outcomes, and the jobs that tasks enqueue with
`conn=None`. So the worker's parts get the test's connection where they would get their
own (`BorrowedConnection`), and while a helper is open the App's pool is replaced by the
test's connection (`enqueues_into`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from pgjobs.app import App
from pgjobs.data.connector import caller_psycopg_connection
from pgjobs.db import Database
from pgjobs.types import CallerConnection as Caller
from pgjobs.worker.connection import Connections


class BorrowedConnection(Connections):
    """The test's connection (psycopg or SQLAlchemy), lent to a worker's parts: their
    statements run in the test's transaction, once (a test wants the error, not a
    reconnection), and it is never closed or reopened here.

    The worker's statements read their rows as tuples, as on its own connections, so the
    caller's row factory (dict rows, say) is set aside while they run.
    """

    reconnects = False

    def __init__(self, conn: Caller) -> None:
        super().__init__("testing")
        self.caller = conn
        self._callers_rows: Any = None

    def _acquire(self) -> psycopg.Connection[Any]:
        conn = caller_psycopg_connection(self.caller)
        self._callers_rows, conn.row_factory = conn.row_factory, tuple_row
        return conn

    def _release(self, conn: psycopg.Connection[Any], *, broken: bool) -> None:
        conn.row_factory = self._callers_rows


class BoundDatabase(Database):
    """An App's `Database` whose transactions are the caller's connection.

    `enqueue(None, ...)` then inserts into the test's transaction instead of committing
    through the pool. The URL, the pool and `close` stay the original's.
    """

    def __init__(self, original: Database, conn: Caller) -> None:
        super().__init__(None, wait=original.wait)
        self.original = original
        self.conn = conn

    @property
    def url(self) -> str:
        return self.original.url

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        return self.original.pool

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """The caller's connection, left in its transaction (the test decides its end)."""
        yield self.conn

    def close(self) -> None:
        self.original.close()


@contextmanager
def enqueues_into(app: App, conn: Caller) -> Iterator[None]:
    """While open, `enqueue(None, ...)` through `app` goes into `conn`'s transaction."""
    original = app.database
    app.database = BoundDatabase(original, conn)
    try:
        yield
    finally:
        app.database = original
