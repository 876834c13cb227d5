"""pgjobs as `bench/compare.py` drives it: the App its worker serves, and its workloads.

The worker is `pgjobs work --app pgjobs_bench:app` (run from this folder). The task is a
plain function, pgjobs' main model: the worker runs it on its thread pool. For the async
drain the worker serves `pgjobs_bench:async_app` instead, where the same task name is an
`async def`, run on the worker's event loop; the jobs are the same. Enqueueing goes
through the public API: `task.enqueue(conn, ...)` for one job, `app.enqueue_many` for many.
The claim timed by `claim` is the worker's own call, `pgjobs.data.claims.ClaimStatements.claim`.

    python bench/peers/pgjobs_bench.py COMMAND [options]   (see _common.py)
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
from _common import (
    TASK,
    Schedule,
    StartMarks,
    SyncWorkloads,
    in_lanes,
    parse_args,
    payload,
    run_sync,
    timed_claims,
)

import pgjobs

SCHEMA = "pgjobs"
JOBS = f"{SCHEMA}.jobs"  # every job (a view), to read
LIVE = f"{SCHEMA}.jobs_live"  # waiting, blocked and running jobs
HISTORY = f"{SCHEMA}.jobs_history"  # finished jobs, a partition per final state and UTC day

app = pgjobs.App(schema=SCHEMA)
marks = StartMarks()


@app.task(name=TASK)
def job(n: int) -> None:
    """A no-op, or a recorded start in the latency scenarios."""
    marks.mark(n)


async_app = pgjobs.App(schema=SCHEMA)


@async_app.task(name=TASK)
async def async_job(n: int) -> None:
    """The no-op as a coroutine, for the async drain."""
    marks.mark(n)


DESCRIPTION = {
    # Empty tables, and the history's partitions for finished jobs of today (and of the
    # next hour, should a UTC day begin meanwhile): `fill_finished` inserts into them.
    "reset": f"""
        TRUNCATE {LIVE}, {HISTORY} RESTART IDENTITY;
        SELECT {SCHEMA}.jobs_history_partition('completed', now() + make_interval(hours => h))
        FROM generate_series(0, 1) AS h""",
    "unfinished": f"SELECT count(*) FROM {LIVE} WHERE state IN ('available', 'running')",
    # First claim to last completion, as the rows record them.
    "window": f"""
        SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),
               count(*) FILTER (WHERE state = 'completed')
        FROM {JOBS}""",
    "fill_waiting": f"""
        INSERT INTO {LIVE} (task, payload)
        SELECT '{TASK}', jsonb_build_object('n', g) FROM generate_series(1, %(count)s) g""",
    # Where finished jobs are: in the history (ids from the live table's sequence).
    "fill_finished": f"""
        INSERT INTO {HISTORY} (id, task, payload, state, attempts, started_at, finished_at)
        SELECT nextval(pg_get_serial_sequence('{LIVE}', 'id')), '{TASK}',
               jsonb_build_object('n', g), 'completed', 1, now(), now()
        FROM generate_series(1, %(count)s) g""",
}


def version() -> str:
    return pgjobs.__version__


def install(url: str) -> None:
    """`pgjobs migrate`, the documented way to create the schema."""
    command = [sys.executable, "-m", "pgjobs", "migrate", "--database-url", url]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def bulk(url: str, count: int) -> float:
    items: list[tuple[str, dict[str, Any]]] = [(TASK, payload(n)) for n in range(count)]
    app.configure(database_url=url)
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        app.enqueue_many(conn, items)
        conn.commit()
        return time.perf_counter() - started


def single(url: str, count: int) -> float:
    app.configure(database_url=url)
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for n in range(count):
            job.enqueue(conn, n=n)
            conn.commit()
        return time.perf_counter() - started


def produce(
    url: str, count: int, rate: float, first: int, lanes: int, per_commit: int = 1
) -> list[Any]:
    """Each lane enqueues its paced jobs, committing every `per_commit` of them (and what
    is left at the end); [(n, its commit's return), ...]."""
    app.configure(database_url=url)
    schedule = Schedule(count, rate, first, lanes)

    def lane(number: int) -> list[tuple[int, float]]:
        commits: list[tuple[int, float]] = []
        pending: list[int] = []
        with psycopg.connect(url) as conn:
            for n in schedule.paced(number):
                job.enqueue(conn, n=n)
                pending.append(n)
                if len(pending) == per_commit:
                    conn.commit()
                    committed = time.time()
                    commits += [(m, committed) for m in pending]
                    pending.clear()
            conn.commit()
            commits += [(m, time.time()) for m in pending]
        return commits

    return in_lanes(lanes, lane)


def claim(url: str, count: int, batch: int, budget: float) -> list[float]:
    """The worker's own claim call, on an autocommit connection as the worker uses."""
    from pgjobs.data.layer import DataLayer

    claims = DataLayer(SCHEMA).claims
    worker_id = f"bench-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        return timed_claims(
            count,
            budget,
            lambda: claims.claim(conn, limit=batch, queue=None, worker_id=worker_id),
        )


def main() -> None:
    args = parse_args()
    workloads = SyncWorkloads(version(), DESCRIPTION, install, bulk, single, produce, claim)
    if not run_sync(args, workloads):
        raise SystemExit(f"pgjobs_bench.py does not do {args.command!r}")


if __name__ == "__main__":
    main()
