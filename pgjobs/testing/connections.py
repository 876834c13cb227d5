"""The test's own connection, in the places where pgjobs would open its own.

A test that rolls back at the end must keep everything on one connection: the jobs its
code enqueues, the worker's claim and outcomes, and the jobs that tasks enqueue with
`conn=None`. So the worker's parts get the test's connection in the shape of their
dedicated one (`CallerConnection`), and while a helper is open the App's pool is
replaced by the test's connection (`enqueues_into`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from pgjobs.app import App
from pgjobs.db import CallerConnection as Caller
from pgjobs.db import Database
from pgjobs.store import caller_psycopg_connection
from pgjobs.worker.connection import ResilientConnection

T = TypeVar("T")


class CallerConnection(ResilientConnection):
    """A caller's connection (psycopg or SQLAlchemy) where a worker's part expects its
    dedicated one: statements run in the caller's transaction, once, and it is never
    closed or reopened here."""

    def __init__(self, conn: Caller) -> None:
        super().__init__("", "testing")
        self.caller = conn

    def connection(self) -> psycopg.Connection[Any]:
        return caller_psycopg_connection(self.caller)

    def run(
        self,
        operation: Callable[[psycopg.Connection[Any]], T],
        *,
        give_up: threading.Event | None = None,
        attempts: int | None = None,
    ) -> T:
        """Run `operation` once: a test wants the error, not a reconnection.

        The worker's statements read their rows as tuples, as on its own connections, so
        the caller's row factory (dict rows, say) is set aside while they run.
        """
        conn = self.connection()
        callers_rows = conn.row_factory
        conn.row_factory = tuple_row
        try:
            return operation(conn)
        finally:
            conn.row_factory = callers_rows

    def discard(self) -> None:
        """Nothing: the connection is the caller's to close."""


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
