"""A dedicated connection that survives database restarts.

Each long-running part of the worker owns one. A statement that fails because the
connection broke is retried on a new connection after an exponential pause, so a
restart or a killed backend costs a log line, not a dead thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from pgjobs.db import first_line

T = TypeVar("T")
log = logging.getLogger("pgjobs.worker")

RECONNECT_INITIAL_DELAY = 0.1
# Executor slots stay busy until the completer has written their outcomes, so its next
# reconnect attempt is when the worker resumes after an outage; at most a second away.
RECONNECT_MAX_DELAY = 1.0


class ResilientConnection:
    """One autocommit psycopg connection, reopened on failure.

    Every statement the worker runs is a single atomic statement, so autocommit gives
    the same guarantees as a transaction block at a third of the round trips
    (no BEGIN, no COMMIT).
    """

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self._conn: psycopg.Connection[Any] | None = None
        self._lost = False  # the last statement failed on the connection

    def connection(self) -> psycopg.Connection[Any]:
        """The open connection, opening it if needed (may raise OperationalError)."""
        if self._conn is None or self._conn.closed:
            # No server-side prepared statements: a generic plan of the batch statements
            # (arrays of ids joined to the table) can be orders of magnitude slower than
            # the custom plan, and planning them each time costs microseconds. It also
            # keeps the worker working behind a transaction pooler (pgjobs.pooler).
            self._conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=5, prepare_threshold=None
            )
        return self._conn

    def discard(self) -> None:
        """Drop a broken connection so that the next use opens a fresh one."""
        if self._conn is not None:
            # Closing a broken socket may fail too; it is gone either way.
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

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
                result = operation(self.connection())
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                self.discard()
                # One warning per outage, however many calls meet it; the retries that
                # follow are debug detail.
                level = logging.DEBUG if self._lost else logging.WARNING
                self._lost = True
                if (give_up is not None and give_up.is_set()) or (
                    attempts is not None and tries >= attempts
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

    def close(self) -> None:
        self.discard()
