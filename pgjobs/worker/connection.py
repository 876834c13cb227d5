"""Where the worker's parts run their statements: connections that survive restarts.

A part never holds a raw connection between statements: it hands an operation to a
`Connections` object, which lends it an autocommit connection for that operation. A
statement that fails because the connection broke is retried on a new connection after
an exponential pause, so a restart or a killed backend costs a log line, not a dead
thread. `ResilientConnection` is one connection of a part's own (the listener's, the
maintenance group's); `SharedConnections` (shared_connections.py) is the few the busy
parts share; `pgjobs.testing` lends the test's own connection the same way.

Every connection of a worker carries an `application_name` naming the worker
(`pgjobs-worker <worker id>`), so that `pg_stat_activity` tells whose it is, unless the
URL or `PGAPPNAME` names one already: the operator's choice wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgjobs.db import first_line

T = TypeVar("T")
log = logging.getLogger("pgjobs.worker")

RECONNECT_INITIAL_DELAY = 0.1
# Executor slots stay busy until the completer has written their outcomes, so its next
# reconnect attempt is when the worker resumes after an outage; at most a second away.
RECONNECT_MAX_DELAY = 1.0
APPLICATION_NAME_PREFIX = "pgjobs-worker"
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def application_name(url: str, worker_id: str) -> str | None:
    """The `application_name` for a worker's connections to `url`: None when the URL or
    the environment already names one (then it applies), else one naming the worker."""
    if "application_name" in conninfo_to_dict(url) or os.environ.get("PGAPPNAME"):
        return None
    return f"{APPLICATION_NAME_PREFIX} {worker_id}"


def open_connection(url: str, application_name: str | None) -> psycopg.Connection[Any]:
    """A new autocommit connection for a worker's part.

    No server-side prepared statements: a generic plan of the batch statements (arrays
    of ids joined to the table) can be orders of magnitude slower than the custom plan,
    and planning them each time costs microseconds. It also keeps the worker working
    behind a transaction pooler (pgjobs.pooler).
    """
    if application_name is not None:
        url = make_conninfo(url, application_name=application_name)
    return psycopg.connect(url, autocommit=True, connect_timeout=5, prepare_threshold=None)


class Connections(ABC):
    """Runs operations on autocommit connections it lends, one operation at a time each.

    Every statement the worker runs is a single atomic statement, so autocommit gives
    the same guarantees as a transaction block at a third of the round trips (no BEGIN,
    no COMMIT).
    """

    # Whether a broken connection is replaced and the operation retried (below).
    reconnects = True

    def __init__(self, name: str) -> None:
        self.name = name  # the part that runs statements here, for its log lines
        self._lost = False  # the last operation failed on its connection

    @abstractmethod
    def _acquire(self) -> psycopg.Connection[Any]:
        """A connection for one operation (may raise OperationalError)."""

    @abstractmethod
    def _release(self, conn: psycopg.Connection[Any], *, broken: bool) -> None:
        """The operation is over; `broken` when its connection failed."""

    def run(
        self,
        operation: Callable[[psycopg.Connection[Any]], T],
        *,
        give_up: threading.Event | None = None,
        attempts: int | None = None,
    ) -> T:
        """Run `operation`, retrying on broken connections.

        Retries until it succeeds, `give_up` is set, or `attempts` are used up; then the
        last error is raised. Errors that are not about the connection are raised at once.
        """
        delay = RECONNECT_INITIAL_DELAY
        tries = 0
        while True:
            tries += 1
            try:
                conn = self._acquire()
                try:
                    result = operation(conn)
                except CONNECTION_ERRORS:
                    self._release(conn, broken=True)
                    raise
                except BaseException:
                    self._release(conn, broken=False)
                    raise
                self._release(conn, broken=False)
            except CONNECTION_ERRORS as error:
                # One warning per outage, however many calls meet it; the retries that
                # follow are debug detail.
                level = logging.DEBUG if self._lost else logging.WARNING
                self._lost = True
                if (
                    not self.reconnects
                    or (give_up is not None and give_up.is_set())
                    or (attempts is not None and tries >= attempts)
                ):
                    raise
                log.log(
                    level,
                    "database connection lost, retrying",
                    extra={
                        "component": self.name,
                        "error": first_line(error),
                        "retry_in": round(delay, 2),
                    },
                )
                (give_up or threading.Event()).wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            if self._lost:
                self._lost = False
                log.info("database connection restored", extra={"component": self.name})
            return result


class ResilientConnection(Connections):
    """One connection of a part's own, opened on first use and reopened after a failure.

    Operations from several threads take turns (the maintenance services share one).
    """

    def __init__(self, url: str, name: str, *, application_name: str | None = None) -> None:
        super().__init__(name)
        self.connect = partial(open_connection, url, application_name)
        self._conn: psycopg.Connection[Any] | None = None
        self._turn = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether a connection is open now (none before the first use, or after close)."""
        return self._conn is not None and not self._conn.closed

    def connection(self) -> psycopg.Connection[Any]:
        """The open connection, opening it if needed (may raise OperationalError)."""
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def discard(self) -> None:
        """Drop a broken connection so that the next use opens a fresh one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing a broken socket may fail too; it is gone either way.
            with contextlib.suppress(Exception):
                conn.close()

    def _acquire(self) -> psycopg.Connection[Any]:
        self._turn.acquire()
        try:
            return self.connection()
        except BaseException:
            self._turn.release()
            raise

    def _release(self, conn: psycopg.Connection[Any], *, broken: bool) -> None:
        if broken:
            self.discard()
        self._turn.release()

    def close(self) -> None:
        self.discard()
