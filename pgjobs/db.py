"""Connections: pgjobs' own pool, and running a statement on a caller's connection.

Producers enqueue on *their* connection so the job commits or rolls back with their
data; this module hides whether that is psycopg, a SQLAlchemy Connection or a Session.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeAlias

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from pgjobs.config import resolve_database_url
from pgjobs.errors import DatabaseUnavailableError, SchemaNotMigratedError

# What `enqueue(conn, ...)` accepts: a psycopg Connection, a SQLAlchemy Connection or
# Session, or None. Typed loosely so that SQLAlchemy stays an import-time detail.
CallerConnection: TypeAlias = Any
Params = Mapping[str, Any]


def first_line(error: BaseException) -> str:
    """psycopg errors span several lines (DETAIL, HINT); the CLI shows one."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open one dedicated connection, turning failure into a readable error."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL: {first_line(error)}"
        ) from error


class Database:
    """pgjobs' own connections, opened lazily so that defining an App costs nothing."""

    def __init__(self, url: str | None, *, max_size: int = 10) -> None:
        self._explicit_url = url
        self._url: str | None = None
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._max_size = max_size
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The resolved URL; may start the embedded cluster on first use."""
        if self._url is None:
            self._url = resolve_database_url(self._explicit_url)
        return self._url

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A dedicated connection outside the pool (LISTEN, long-lived loops)."""
        return connect(self.url, autocommit=autocommit)

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        with self._lock:
            if self._pool is None:
                # Fail fast with a readable error rather than inside the pool's retries.
                connect(self.url).close()
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self._max_size,
                    open=True,
                    check=ConnectionPool.check_connection,
                    name="pgjobs",
                )
            return self._pool

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction that commits on success."""
        with self.pool.connection() as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def _sqlalchemy_connection(conn: Any) -> Any | None:
    """The SQLAlchemy Connection behind `conn` (a Connection or a Session), else None."""
    try:
        from sqlalchemy.engine import Connection
        from sqlalchemy.orm import Session
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    if isinstance(conn, Session):
        return conn.connection()  # joins (or begins) the session's transaction
    if isinstance(conn, Connection):
        return conn
    return None


def fetch_all(conn: Any, query: sql.Composed, params: Params) -> list[tuple[Any, ...]]:
    """Run `query` on a caller's psycopg or SQLAlchemy connection, inside its transaction."""
    try:
        if isinstance(conn, psycopg.Connection):
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        sa_conn = _sqlalchemy_connection(conn)
        if sa_conn is None:
            raise TypeError(
                "conn must be a psycopg Connection, a SQLAlchemy Connection or Session, "
                f"or None; got {type(conn).__name__}"
            )
        if sa_conn.dialect.driver != "psycopg":
            raise TypeError(
                "pgjobs needs SQLAlchemy's psycopg 3 driver (postgresql+psycopg://...); "
                f"this engine uses {sa_conn.dialect.driver!r}"
            )
        raw = sa_conn.connection.driver_connection
        result = sa_conn.exec_driver_sql(query.as_string(raw), dict(params))
        return [tuple(row) for row in result.fetchall()] if result.returns_rows else []
    except psycopg.errors.UndefinedTable as error:
        raise SchemaNotMigratedError(
            f"pgjobs tables not found ({first_line(error)}): run `pgjobs migrate`"
        ) from error
    except Exception as error:
        # SQLAlchemy wraps driver errors; unwrap the one case users can fix themselves.
        orig = getattr(error, "orig", None)
        if isinstance(orig, psycopg.errors.UndefinedTable):
            raise SchemaNotMigratedError(
                f"pgjobs tables not found ({first_line(orig)}): run `pgjobs migrate`"
            ) from error
        raise
