"""Connections: pgjobs' own pool for producers and commands, and dedicated connections.

Producers usually enqueue on *their* connection so the job commits or rolls back with
their data (the data layer runs the statement there); this pool serves `conn=None` and the
CLI.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from pgjobs.bounds import check_seconds
from pgjobs.config import check_explicit_url, resolve_database_url
from pgjobs.data.connector import rows
from pgjobs.data.steps import Statement
from pgjobs.errors import ConfigurationError, DatabaseUnavailableError
from pgjobs.pooler import prepare_if_direct

T = TypeVar("T")
# For this transaction only: a pool's connections are shared, and poolers hand them on.
SET_STATEMENT_TIMEOUT = sql.SQL("SELECT set_config('statement_timeout', %s, true)")


def first_line(error: BaseException) -> str:
    """psycopg errors span several lines (DETAIL, HINT); the CLI shows one."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open one dedicated connection, turning failure into a readable error.

    It never prepares statements (pgjobs.pooler): it serves one-off work (migrate, a
    check) that may go through a transaction pooler and would not gain from it.
    """
    try:
        return psycopg.connect(
            url, autocommit=autocommit, connect_timeout=10, prepare_threshold=None
        )
    except psycopg.OperationalError as error:
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL: {first_line(error)}"
        ) from error


# How long a producer waits for a pooled connection before giving up.
DEFAULT_WAIT = 5.0
POOL_NAME = "pgjobs"
# While the server is down the pool retries in the background and logs every failed
# attempt; one such warning per this many seconds says enough.
POOL_WARNING_EVERY = 60.0


class _OneWarningPerOutage(logging.Filter):
    """Lets through one "error connecting" record of pgjobs' pool per interval."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if f"'{POOL_NAME}'" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self._last < POOL_WARNING_EVERY:
            return False
        self._last = now
        return True


logging.getLogger("psycopg.pool").addFilter(_OneWarningPerOutage())


class Database:
    """pgjobs' own connections, opened lazily so that defining an App costs nothing.

    A producer whose database went away gets `DatabaseUnavailableError` after `wait`
    seconds, with one warning, instead of hanging in the pool's retries.
    """

    def __init__(
        self,
        url: str | None,
        *,
        max_size: int = 10,
        wait: float = DEFAULT_WAIT,
        statement_timeout: float | None = None,
    ) -> None:
        check_seconds("the connection wait", wait, exclusive=True, error=ConfigurationError)
        self._explicit_url = check_explicit_url(url)
        self._url: str | None = None
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._max_size = max_size
        self.wait = wait
        # Set per transaction (SET LOCAL), so it holds behind a transaction pooler too.
        self.statement_timeout_ms = (
            None if statement_timeout is None else max(1, round(statement_timeout * 1000))
        )
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The resolved URL; may start the embedded cluster on first use."""
        if self._url is None:
            self._url = resolve_database_url(self._explicit_url)
        return self._url

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
                    kwargs={"connect_timeout": max(1, round(self.wait)), "prepare_threshold": None},
                    configure=prepare_if_direct,
                    timeout=self.wait,
                    name=POOL_NAME,
                )
            return self._pool

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction that commits on success."""
        with ExitStack() as stack:
            try:
                conn = stack.enter_context(self.pool.connection())
            except PoolTimeout as error:
                raise DatabaseUnavailableError(
                    f"no connection to PostgreSQL within {self.wait:g}s; is the server up?"
                ) from error
            if self.statement_timeout_ms is not None:
                rows(
                    conn, "", Statement(SET_STATEMENT_TIMEOUT, (f"{self.statement_timeout_ms}ms",))
                )
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
