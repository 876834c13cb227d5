"""procrastinate as `bench/compare.py` drives it, used as its documentation recommends.

Runs with the python of bench/.peers-venv. The worker is procrastinate's own CLI,
`procrastinate --app=procrastinate_bench.app worker --concurrency N` (run from this
folder), and the task is an `async def`, which is what procrastinate's `concurrency`
parallelises (sync tasks run in a thread each). Jobs go through the public API:
`task.defer_async(...)` for one job (one transaction each, from the connector's pool) and
`task.batch_defer_async(...)` for many (one statement). The schema comes from
`procrastinate schema --apply`. The claim timed by `claim` is the worker's own fetch,
`job_manager.fetch_job`, which takes one job per call: procrastinate has no batch claim.

    python bench/peers/procrastinate_bench.py COMMAND [options]   (see _common.py)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import procrastinate
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

# The pool opens connections only as they are needed; its ceiling stays above every
# concurrency compare.py tries (each running job may hold one to record its outcome, plus
# the fetch loop), so the pool is never what limits procrastinate.
POOL_MAX_SIZE = 40

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get(DATABASE_URL_VARIABLE, ""), max_size=POOL_MAX_SIZE
    )
)
marks = StartMarks()


@app.task(name=TASK)
async def job(n: int) -> None:
    """A no-op, or a recorded start in the latency scenarios."""
    marks.mark(n)


DESCRIPTION = {
    "reset": """
        TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,
                 procrastinate_workers RESTART IDENTITY CASCADE""",
    "unfinished": "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    # Its events table records every status change with a time: fetch ('started') to
    # the recorded outcome ('succeeded').
    "window": """
        SELECT extract(epoch FROM min(at) FILTER (WHERE type = 'started')),
               extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')),
               count(*) FILTER (WHERE type = 'succeeded')
        FROM procrastinate_events""",
    "fill_waiting": f"""
        INSERT INTO procrastinate_jobs (queue_name, task_name, args)
        SELECT 'default', '{TASK}', jsonb_build_object('n', g)
        FROM generate_series(1, %(count)s) g""",
    "fill_finished": f"""
        INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
        SELECT 'default', '{TASK}', jsonb_build_object('n', g), 'succeeded', 1
        FROM generate_series(1, %(count)s) g""",
}


def install(url: str) -> None:
    """`procrastinate schema --apply`, the documented way to create the schema."""
    command = [sys.executable, "-m", "procrastinate", "--app=procrastinate_bench.app"]
    subprocess.run(
        [*command, "schema", "--apply"],
        check=True,
        cwd=Path(__file__).parent,
        env={**os.environ, DATABASE_URL_VARIABLE: url},
        stdout=subprocess.DEVNULL,
    )


async def bulk(count: int) -> float:
    items = [payload(n) for n in range(count)]
    started = time.perf_counter()
    await job.batch_defer_async(*items)
    return time.perf_counter() - started


async def single(count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        await job.defer_async(n=n)
    return time.perf_counter() - started


async def produce(count: int, rate: float, first: int, lanes: int) -> list[Any]:
    """Each lane defers in turn; every `defer_async` takes a pool connection and commits."""
    schedule = Schedule(count, rate, first, lanes)

    async def lane(number: int) -> list[tuple[int, float]]:
        commits = []
        async for n in schedule.paced_async(number):
            await job.defer_async(n=n)
            commits.append((n, time.time()))
        return commits

    return await in_lanes_async(lanes, lane)


async def claim(count: int, budget: float) -> list[float]:
    worker_id = await app.job_manager.register_worker()
    return await timed_claims_async(
        count, budget, lambda: app.job_manager.fetch_job(queues=None, worker_id=worker_id)
    )


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    async with app.open_async():
        if args.command == "bulk":
            emit({"seconds": await bulk(args.count)})
        elif args.command == "single":
            emit({"seconds": await single(args.count)})
        elif args.command == "produce":
            commits = await produce(args.count, args.rate, args.first, args.lanes)
            write_commits(args.out, commits)
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "claim":
            emit({"ms": await claim(args.count, args.budget)})
        else:
            raise SystemExit(f"procrastinate_bench.py does not do {args.command!r}")


def main() -> None:
    args = parse_args()
    if args.command == "describe":
        emit({"version": version("procrastinate"), "sql": DESCRIPTION})
    elif args.command == "install":
        install(args.url)
        emit({})
    else:
        # The app above was made from the environment, which compare.py sets for us.
        if os.environ.get(DATABASE_URL_VARIABLE) != args.url:
            raise SystemExit(f"set {DATABASE_URL_VARIABLE} to the --url")
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
