"""pgjobs' own asyncio pool, for `enqueue_async(None, ...)`.

The async twin of `Database`'s pool, with the same URL, wait and error. An asyncio pool
belongs to the event loop that opened it, and a program may run several loops over its
life (each `asyncio.run` is one), so there is one pool per running loop, opened lazily in
that loop and forgotten with it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pgjobs.db import POOL_NAME, Database, first_line
from pgjobs.errors import DatabaseUnavailableError

AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]
# No server-side prepared statements: they break behind a transaction-mode pooler
# (`pgjobs.pooler` says why), and an enqueue is one statement per transaction anyway.
_CONNECT_OPTIONS: dict[str, Any] = {"prepare_threshold": None}


class AsyncDatabase:
    """Asyncio connections to `database`'s server, pooled per event loop."""

    def __init__(self, database: Database, *, max_size: int = 10) -> None:
        self.database = database
        self._max_size = max_size
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPool] = (
            weakref.WeakKeyDictionary()
        )

    async def pool(self) -> AsyncPool:
        """This loop's pool, opened on first use; DatabaseUnavailableError if unreachable."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        # Resolving the URL may start the embedded cluster: not on the event loop.
        url = await asyncio.to_thread(lambda: self.database.url)
        wait = self.database.wait
        try:
            # Fail fast with a readable error rather than inside the pool's retries.
            probe = await psycopg.AsyncConnection.connect(
                url, connect_timeout=max(1, round(wait)), **_CONNECT_OPTIONS
            )
        except psycopg.OperationalError as error:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL: {first_line(error)}"
            ) from error
        await probe.close()
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=self._max_size,
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": max(1, round(wait)), **_CONNECT_OPTIONS},
            timeout=wait,
            name=POOL_NAME,
        )
        await pool.open()
        if loop in self._pools:  # another coroutine of this loop won the race
            await pool.close()
            return self._pools[loop]
        self._pools[loop] = pool
        return pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in a transaction that commits on success."""
        pool = await self.pool()
        async with AsyncExitStack() as stack:
            try:
                conn = await stack.enter_async_context(pool.connection())
            except PoolTimeout as error:
                raise DatabaseUnavailableError(
                    f"no connection to PostgreSQL within {self.database.wait:g}s; is the server up?"
                ) from error
            yield conn

    async def close(self) -> None:
        """Close the running loop's pool (a later call opens a new one)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()
