"""pgjobs' own asyncio connections, for `enqueue_async(None, ...)` and `App.result_async`.

The async twin of `Database`'s pool, with the same URL, wait and errors. Asyncio
connections belong to the event loop that made them, and a program may run several
loops over its life (each `asyncio.run` is one), so each running loop has connections of
its own, made when first needed and closed when the loop shuts down: `asyncio.run`
cancels the tasks left before it closes its loop, and a task of ours that waits for
nothing else then closes them.

It is a small cache of idle connections rather than psycopg_pool's AsyncConnectionPool,
whose background tasks `asyncio.run` cancels too: closing that pool at the loop's end
failed on its own cancelled tasks and left its connections open, with the loop their
pool referenced, for the life of the program (a script of a hundred loops ran out of
server connections), and a loop that ended while the pool grew could hang in its
shutdown. Nothing here runs in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pgjobs.data.connector import AsyncPsycopgConnector
from pgjobs.data.steps import Statement
from pgjobs.db import Database, first_line
from pgjobs.errors import DatabaseUnavailableError

AsyncConnection = psycopg.AsyncConnection[Any]
# No server-side prepared statements: they break behind a transaction-mode pooler
# (`pgjobs.pooler` says why), and an enqueue is one statement per transaction anyway.
_CONNECT_OPTIONS: dict[str, Any] = {"prepare_threshold": None}


class AsyncDatabase:
    """Asyncio connections to `database`'s server, kept per event loop."""

    def __init__(self, database: Database, *, max_size: int = 10) -> None:
        self.database = database
        self._max_size = max_size
        self._loops: dict[asyncio.AbstractEventLoop, LoopConnections] = {}

    def connections(self) -> LoopConnections:
        """The running loop's connections; the first call in a loop sets them up."""
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            found = self._loops[loop] = LoopConnections(self.database, self._max_size)
            found.closer = loop.create_task(self._close_with_loop(loop, found))
        return found

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection of this loop's in a transaction that commits on success."""
        connections = self.connections()
        conn = await connections.acquire()
        try:
            async with conn.transaction():
                yield conn
        finally:
            await connections.release(conn)

    async def close(self) -> None:
        """Close the running loop's connections (a later call makes new ones)."""
        connections = self._loops.pop(asyncio.get_running_loop(), None)
        if connections is not None:
            await connections.close()

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, connections: LoopConnections
    ) -> None:
        """Wait until cancelled (the loop shuts down, or `close`), then close them."""
        try:
            await asyncio.Event().wait()
        finally:
            if self._loops.get(loop) is connections:
                del self._loops[loop]
            await connections.close()


class LoopConnections:
    """One event loop's connections: up to `max_size` in use at once, idle ones kept for
    the next transaction (checked first, as a pool's would be)."""

    def __init__(self, database: Database, max_size: int) -> None:
        self.database = database
        self.idle: list[AsyncConnection] = []
        self.slots = asyncio.Semaphore(max_size)
        self.closed = False
        self.closer: asyncio.Task[None] | None = None

    async def acquire(self) -> AsyncConnection:
        """An idle connection that still works, else a new one; DatabaseUnavailableError
        when none is free or the server cannot be reached within the database's wait."""
        wait = self.database.wait
        try:
            await asyncio.wait_for(self.slots.acquire(), wait)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            raise DatabaseUnavailableError(
                f"no connection to PostgreSQL within {wait:g}s; is the server up?"
            ) from None
        try:
            while self.idle:
                conn = self.idle.pop()
                if await _still_works(conn):
                    return conn
            return await self._connect()
        except BaseException:
            self.slots.release()
            raise

    async def release(self, conn: AsyncConnection) -> None:
        """Keep `conn` for the next transaction, or close it (closed loop, broken)."""
        self.slots.release()
        idle = conn.info.transaction_status == TransactionStatus.IDLE
        if self.closed or conn.closed or not idle:
            await conn.close()
        else:
            self.idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections; those in use close when released."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            await conn.close()
        if self.closer is not None and self.closer is not asyncio.current_task():
            self.closer.cancel()

    async def _connect(self) -> AsyncConnection:
        # Resolving the URL may start the embedded cluster: not on the event loop.
        url = await asyncio.to_thread(lambda: self.database.url)
        try:
            return await psycopg.AsyncConnection.connect(
                url, connect_timeout=max(1, round(self.database.wait)), **_CONNECT_OPTIONS
            )
        except psycopg.OperationalError as error:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL: {first_line(error)}"
            ) from error


async def _still_works(conn: AsyncConnection) -> bool:
    """True after an empty statement's round trip (a server restarted meanwhile leaves
    connections that fail at their next use); a failing connection is closed."""
    if conn.closed or conn.broken:
        return False
    try:
        await conn.set_autocommit(True)
        await AsyncPsycopgConnector(conn).rows(Statement(sql.SQL(""), None))
        await conn.set_autocommit(False)
    except psycopg.Error:
        await conn.close()
        return False
    return True
