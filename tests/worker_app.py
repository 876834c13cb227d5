"""The App that `pgjobs work` subprocesses serve in the tests.

Tasks record each run in `<schema>.runs` (created by the `runs_table` fixture), so tests
can see what ran, in what order, how often and on which worker. Retries are fast here.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

import pgjobs
from pgjobs import JobContext

app = pgjobs.App(backoff=pgjobs.Backoff(base=0.05, factor=2.0, cap=0.4, jitter=0.2))
_local = threading.local()


def _connection() -> psycopg.Connection[Any]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["PGJOBS_DATABASE_URL"], autocommit=True)
        _local.conn = conn
    return conn


def record_run(ctx: JobContext, label: str | None = None) -> None:
    """Insert one row into <schema>.runs for this attempt."""
    query = sql.SQL(
        "INSERT INTO {} (job_id, attempt, label, worker_id) VALUES (%s, %s, %s, %s)"
    ).format(sql.Identifier(app.schema, "runs"))
    try:
        _connection().execute(query, (ctx.job_id, ctx.attempt, label, ctx.worker_id))
    except psycopg.OperationalError:
        _local.conn = None
        raise


@app.task(name="noop")
def noop(**_: Any) -> None:
    """Does nothing."""


@app.task(name="record", pass_context=True)
def record(ctx: JobContext, label: str | None = None) -> None:
    """Records that it ran."""
    record_run(ctx, label)


@app.task(name="flaky", pass_context=True)
def flaky(ctx: JobContext, failures: int) -> None:
    """Fails its first `failures` attempts, then succeeds."""
    record_run(ctx)
    if ctx.attempt <= failures:
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")


@app.task(name="always_fails", max_attempts=3)
def always_fails() -> None:
    """Never succeeds."""
    raise ValueError("this task always fails")


@app.task(name="fail_now", pass_context=True)
def fail_now(ctx: JobContext) -> None:
    """Fails for good on its first attempt."""
    record_run(ctx)
    raise pgjobs.FailJob("no point in retrying")


@app.task(name="snooze", pass_context=True)
def snooze(ctx: JobContext, times: int, delay: float = 0.1) -> None:
    """Snoozes `times` times, then succeeds."""
    record_run(ctx)
    if ctx.attempt <= times:
        raise pgjobs.SnoozeJob(delay)


@app.task(name="sleep", pass_context=True)
def sleep(ctx: JobContext, seconds: float, cooperative: bool = False) -> None:
    """Records its start, then sleeps; a cooperative sleeper stops at its stop flag."""
    record_run(ctx, "started")
    if cooperative:
        ctx.stop.wait(seconds)
    else:
        time.sleep(seconds)
    record_run(ctx, "finished")


@app.task(name="times_out", pass_context=True, timeout=0.3, max_attempts=2)
def times_out(ctx: JobContext) -> None:
    """Runs past its timeout, then notes whether it saw its stop flag."""
    record_run(ctx, "started")
    stopped = ctx.stop.wait(5)
    record_run(ctx, "saw stop flag" if stopped else "no stop flag")


@app.task(name="ignores_timeout", pass_context=True, timeout=0.2, max_attempts=1)
def ignores_timeout(ctx: JobContext) -> None:
    """Runs well past its timeout without looking at its stop flag."""
    record_run(ctx, "started")
    time.sleep(0.8)
    record_run(ctx, "finished")


@app.task(name="raises_unstorable", max_attempts=1)
def raises_unstorable(kind: str) -> None:
    """Fails with a message PostgreSQL cannot store as it is (a NUL or a lone surrogate)."""
    bad = {"nul": "\x00", "surrogate": "\ud800"}[kind]
    raise ValueError(f"bad byte {bad} here")
