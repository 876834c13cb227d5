"""The App that `pgjobs work` subprocesses serve in the limits tests.

Each task records the interval it ran in `<schema>.intervals` (the `intervals` fixture
creates it), by the database's clock, so tests can measure how many ran at once.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

import pgjobs
from pgjobs import JobContext
from tests.worker_app import _connection

app = pgjobs.App(backoff=pgjobs.Backoff(base=0.05, factor=2.0, cap=0.4, jitter=0.2))


def run_for(ctx: JobContext, label: str, seconds: float) -> None:
    """Record the start, stay `seconds` (or until told to stop), record the end."""
    table = sql.Identifier(app.schema, "intervals")
    conn = _connection()
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (job_id, label, started) VALUES (%s, %s, clock_timestamp())"
        ).format(table),
        (ctx.job_id, label),
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.should_stop():
        time.sleep(0.005)
    conn.execute(
        sql.SQL(
            "UPDATE {} SET ended = clock_timestamp() WHERE job_id = %s AND ended IS NULL"
        ).format(table),
        (ctx.job_id,),
    )


@app.task(name="lim.three", pass_context=True, concurrency=3)
def three(ctx: JobContext, seconds: float = 0.2) -> None:
    """At most three at once, across every worker."""
    run_for(ctx, "three", seconds)


@app.task(name="lim.per_account", pass_context=True, concurrency=1, concurrency_key="account")
def per_account(ctx: JobContext, account: str, seconds: float = 0.2) -> None:
    """At most one at once per account."""
    run_for(ctx, account, seconds)


@app.task(name="lim.rated", pass_context=True, rate_limit="10/s")
def rated(ctx: JobContext) -> None:
    """At most ten starts in any second."""
    run_for(ctx, "rated", 0.0)


@app.task(name="lim.free", pass_context=True)
def free(ctx: JobContext, **_: Any) -> None:
    """No limit."""
    run_for(ctx, "free", 0.0)
