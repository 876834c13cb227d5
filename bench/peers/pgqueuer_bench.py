"""pgqueuer as `bench/compare.py` drives it, used as its documentation recommends.

Runs with the python of bench/.peers-venv. The worker (`work --batch N`) is what
`pgq run pgqueuer_bench:create --batch-size N` runs: `pgqueuer.run(factory, batch_size=N)`
on uvloop, with pgqueuer's logger at WARNING. It is called directly rather than through
`pgq run` because the CLI of pgqueuer 1.6.0 fails at start with the typer that the package
index serves today (`--log-level` reaches the logger as a str: AttributeError). The factory
uses the asyncpg driver of pgqueuer's quick start; the entrypoint is an `async def`, so
its drain is also what compare.py's async drain compares pgjobs' `async def` tasks with.

Jobs go through the public `Queries.enqueue`: one name and payload for one job (its own
transaction), lists for a batch (one statement). The schema comes from `pgq install`
(default durability: every table logged, like the others'). The claim timed by `claim` is
the worker's own `Queries.dequeue`. pgqueuer deletes a finished job from its queue table
and keeps its history in `pgqueuer_log`, so that is where the "finished rows" of the
claim-cost scenario go, and where the drain's window is read from (the 'picked' and
'successful' entries).

    python bench/peers/pgqueuer_bench.py COMMAND [options]   (see _common.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import asyncpg
import pgqueuer
import uvloop
from _common import (
    DATABASE_URL_VARIABLE,
    TASK,
    Schedule,
    StartMarks,
    emit,
    in_lanes_async,
    parse_args,
    payload,
    timed_claims_async,
    write_commits,
)
from pgqueuer import PgQueuer
from pgqueuer.core.logconfig import LogLevel, setup_fancy_logger
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.ports.repository import EntrypointExecutionParameter
from pgqueuer.queries import Queries

marks = StartMarks()


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The factory `pgq run` takes: one asyncpg connection, one entrypoint."""
    connection = await asyncpg.connect(os.environ[DATABASE_URL_VARIABLE])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint(TASK)
    async def job(job: Job) -> None:
        """A no-op, or a recorded start in the latency scenarios."""
        if marks.enabled and job.payload is not None:
            marks.mark(json.loads(job.payload)["n"])

    try:
        yield pgq
    finally:
        await connection.close()


DESCRIPTION = {
    "reset": "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY",
    "unfinished": "SELECT count(*) FROM pgqueuer",
    "window": """
        SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked')),
               extract(epoch FROM max(created) FILTER (WHERE status = 'successful')),
               count(*) FILTER (WHERE status = 'successful')
        FROM pgqueuer_log""",
    "fill_waiting": f"""
        INSERT INTO pgqueuer (priority, entrypoint, payload, status)
        SELECT 0, '{TASK}', convert_to(json_build_object('n', g)::text, 'UTF8'), 'queued'
        FROM generate_series(1, %(count)s) g""",
    "fill_finished": f"""
        INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority, aggregated)
        SELECT g, 'successful', '{TASK}', 0, true FROM generate_series(1, %(count)s) g""",
}


def encoded(n: int) -> bytes:
    return json.dumps(payload(n)).encode()


def install(url: str) -> None:
    """`pgq install`, the documented way to create the schema."""
    command = [sys.executable, "-m", "pgqueuer", "--pg-dsn", url, "install"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def bulk(queries: Queries, count: int) -> float:
    payloads: list[bytes | None] = [encoded(n) for n in range(count)]
    names = [TASK] * count
    priorities = [0] * count
    started = time.perf_counter()
    await queries.enqueue(names, payloads, priorities)
    return time.perf_counter() - started


async def single(queries: Queries, count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        await queries.enqueue(TASK, encoded(n))
    return time.perf_counter() - started


async def produce(url: str, count: int, rate: float, first: int, lanes: int) -> list[Any]:
    """Each lane has its own connection; every `enqueue` there is its own transaction."""
    schedule = Schedule(count, rate, first, lanes)

    async def lane(number: int) -> list[tuple[int, float]]:
        connection = await asyncpg.connect(url)
        try:
            queries = Queries(AsyncpgDriver(connection))
            commits = []
            async for n in schedule.paced_async(number):
                await queries.enqueue(TASK, encoded(n))
                commits.append((n, time.time()))
            return commits
        finally:
            await connection.close()

    return await in_lanes_async(lanes, lane)


async def claim(queries: Queries, count: int, batch: int, budget: float) -> list[float]:
    entrypoints = {TASK: EntrypointExecutionParameter(concurrency_limit=0)}
    manager = uuid.uuid4()
    return await timed_claims_async(
        count,
        budget,
        lambda: queries.dequeue(
            batch_size=batch,
            entrypoints=entrypoints,  # type: ignore[arg-type]
            queue_manager_id=manager,  # type: ignore[arg-type]
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),
        ),
    )


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    connection = await asyncpg.connect(args.url)
    try:
        queries = Queries(AsyncpgDriver(connection))
        if args.command == "bulk":
            emit({"seconds": await bulk(queries, args.count)})
        elif args.command == "single":
            emit({"seconds": await single(queries, args.count)})
        elif args.command == "produce":
            commits = await produce(args.url, args.count, args.rate, args.first, args.lanes)
            write_commits(args.out, commits)
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "claim":
            emit({"ms": await claim(queries, args.count, args.batch, args.budget)})
        else:
            raise SystemExit(f"pgqueuer_bench.py does not do {args.command!r}")
    finally:
        await connection.close()


def work(batch: int) -> None:
    """The worker, as `pgq run` starts it; SIGTERM or SIGINT stop it gracefully."""
    setup_fancy_logger(LogLevel.WARNING)
    uvloop.run(pgqueuer.run(create, batch_size=batch))


def main() -> None:
    args = parse_args()
    if args.command == "work":
        work(args.batch)
    elif args.command == "describe":
        emit({"version": version("pgqueuer"), "sql": DESCRIPTION})
    elif args.command == "install":
        install(args.url)
        emit({})
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
