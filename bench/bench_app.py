"""The tasks `bench/worker.py` measures, served by `pgjobs work --app bench.bench_app:app`.

The database and schema come from `PGJOBS_DATABASE_URL` and `PGJOBS_SCHEMA`, which the
benchmark sets for its worker subprocess. `record_start` needs `<schema>.starts`, which
the benchmark creates.
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

NOOP = "bench.noop"
RECORD_START = "bench.record_start"

app = pgjobs.App()
_local = threading.local()


def _connection() -> psycopg.Connection[Any]:
    """One autocommit connection per executor thread, so recording costs one round trip."""
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["PGJOBS_DATABASE_URL"], autocommit=True)
        _local.conn = conn
    return conn


@app.task(name=NOOP)
def noop() -> None:
    """Does nothing: what is measured is the queue's own cost per job."""


@app.task(name=RECORD_START, pass_context=True)
def record_start(ctx: JobContext) -> None:
    """Records the wall-clock time at which the task began, for pickup latency."""
    started = time.time()  # first, so the insert's own cost is not counted
    query = sql.SQL("INSERT INTO {} (job_id, started) VALUES (%s, %s)").format(
        sql.Identifier(app.schema, "starts")
    )
    _connection().execute(query, (ctx.job_id, started))
