"""The App of the asyncio worker tests: `async def` tasks beside plain ones.

Like `tests/worker_app.py`, tasks record their runs in `<schema>.runs` (the `runs_table`
fixture). The `gauge_*` tasks also count how many of their kind run at once in the
worker process, and `peaks` records the highest counts seen, so a test can check the
thread limit and the async limit from outside.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

import pgjobs
from pgjobs import JobContext

app = pgjobs.App(backoff=pgjobs.Backoff(base=0.05, factor=2.0, cap=0.4, jitter=0.2))

_lock = threading.Lock()
_running = {"sync": 0, "async": 0}
_peaks = {"sync": 0, "async": 0}
_async_conn: psycopg.AsyncConnection[Any] | None = None


def _insert_run() -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} (job_id, attempt, label, worker_id) VALUES (%s, %s, %s, %s)"
    ).format(sql.Identifier(app.schema, "runs"))


async def record(ctx: JobContext, label: str) -> None:
    """Insert one row into <schema>.runs, on one async connection the tasks share."""
    global _async_conn
    if _async_conn is None or _async_conn.closed:
        _async_conn = await psycopg.AsyncConnection.connect(
            os.environ["PGJOBS_DATABASE_URL"], autocommit=True
        )
    await _async_conn.execute(_insert_run(), (ctx.job_id, ctx.attempt, label, ctx.worker_id))


def record_sync(ctx: JobContext, label: str) -> None:
    with psycopg.connect(os.environ["PGJOBS_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(_insert_run(), (ctx.job_id, ctx.attempt, label, ctx.worker_id))


def _enter(kind: str) -> None:
    with _lock:
        _running[kind] += 1
        _peaks[kind] = max(_peaks[kind], _running[kind])


def _leave(kind: str) -> None:
    with _lock:
        _running[kind] -= 1


@app.task(name="gauge_sync")
def gauge_sync(seconds: float) -> None:
    """Counts itself among the thread tasks running now."""
    _enter("sync")
    try:
        time.sleep(seconds)
    finally:
        _leave("sync")


@app.task(name="gauge_async")
async def gauge_async(seconds: float) -> None:
    """Counts itself among the coroutines running now; must run on the worker's loop."""
    if threading.current_thread().name != "pgjobs-async":
        raise RuntimeError(f"async task on thread {threading.current_thread().name}")
    _enter("async")
    try:
        await asyncio.sleep(seconds)
    finally:
        _leave("async")


@app.task(name="peaks", pass_context=True)
def peaks(ctx: JobContext) -> None:
    """Records the most thread and async tasks seen running at once."""
    with _lock:
        label = f"sync={_peaks['sync']} async={_peaks['async']}"
    record_sync(ctx, label)


@app.task(name="async_sleep", pass_context=True)
async def async_sleep(ctx: JobContext, seconds: float) -> None:
    """Records its start; sleeps; records how it ended (finished, or cancelled)."""
    await record(ctx, "started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await record(ctx, "cancelled")
        raise
    await record(ctx, "finished")


@app.task(name="sync_sleep", pass_context=True)
def sync_sleep(ctx: JobContext, seconds: float) -> None:
    """The thread twin of async_sleep (no cancellation: threads cannot be)."""
    record_sync(ctx, "started")
    time.sleep(seconds)
    record_sync(ctx, "finished")


@app.task(name="async_times_out", pass_context=True, timeout=0.3, max_attempts=1)
async def async_times_out(ctx: JobContext) -> None:
    """Runs past its timeout; records the stop signal and the cancellation it sees."""

    async def watch() -> None:
        if await ctx.wait_stop(10):
            await record(ctx, "stop signalled")

    watcher = asyncio.create_task(watch())
    await record(ctx, "started")
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await record(ctx, "cancelled")
        await watcher
        raise
    await record(ctx, "finished")


@app.task(name="async_fails", pass_context=True, max_attempts=2)
async def async_fails(ctx: JobContext) -> None:
    """Fails its first attempt, succeeds on the second."""
    await record(ctx, "ran")
    if ctx.attempt == 1:
        raise ValueError("async failure")


@app.task(name="blocks_loop", pass_context=True)
async def blocks_loop(ctx: JobContext, seconds: float) -> None:
    """Blocks the event loop with a synchronous sleep: the classic async mistake."""
    await record(ctx, "started")
    time.sleep(seconds)  # the line the watchdog must name
    await record(ctx, "finished")
