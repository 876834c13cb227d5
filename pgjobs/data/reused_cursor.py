"""One cursor kept with each caller's psycopg connection, for pgjobs' small statements.

A new psycopg cursor starts with empty adaptation caches: on its first execute it builds
a dumper for every parameter's type and a loader for every result column. A single
`enqueue` sends eight parameters and reads two columns, and building those every time
was about 19 µs of its 142 µs of client CPU. A cursor kept with the connection keeps them.

The cursor lives on the connection object itself, so it goes when the connection does
(a cache elsewhere would keep the connection alive: the cursor references it), and is
made again if someone closed it. Its rows are always tuples, whatever row factory the
caller gave the connection. Cursors are not thread-safe, so a statement that finds the
kept cursor in use (another thread, or another asyncio task, on the same connection)
takes a fresh cursor of its own.

A cursor holds its last result until its next statement, so only statements that return
a few rows should use it.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import psycopg
from psycopg.rows import TupleRow, tuple_row

_ATTRIBUTE = "_pgjobs_reused_cursor"

AnyCursor = psycopg.Cursor[TupleRow] | psycopg.AsyncCursor[TupleRow]
AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


def reused_cursor(conn: AnyConnection) -> AbstractContextManager[Any]:
    """The connection's kept tuple-row cursor for one statement, or a fresh cursor when
    the kept one is in use (or the connection cannot keep one).

    A plain context manager for both kinds of connection: psycopg creates a cursor, async
    or not, without I/O, so an async caller awaits its statement inside an ordinary
    `with`.
    """
    kept: _Kept | None = getattr(conn, _ATTRIBUTE, None)
    if kept is None or kept.cursor.closed:
        kept = _Kept(conn.cursor(row_factory=tuple_row))
        try:
            setattr(conn, _ATTRIBUTE, kept)
        except AttributeError:  # a connection class without instance attributes
            return nullcontext(kept.cursor)
    if kept.in_use.acquire(blocking=False):
        return kept
    return nullcontext(conn.cursor(row_factory=tuple_row))


class _Kept:
    """The kept cursor; entering it yields the cursor, leaving it frees it for the next
    statement (the lock is taken by `reused_cursor`, before entering)."""

    __slots__ = ("cursor", "in_use")

    def __init__(self, cursor: AnyCursor) -> None:
        self.cursor = cursor
        self.in_use = threading.Lock()

    def __enter__(self) -> AnyCursor:
        return self.cursor

    def __exit__(self, *exc_info: object) -> None:
        self.in_use.release()
