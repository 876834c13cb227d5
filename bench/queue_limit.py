"""What a queue limit (`QueueFull`) costs a producer: single enqueues with and without one.

    python bench/queue_limit.py [--database-url URL] [--jobs 1000] [--rounds 5]

Three producers enqueue one job per transaction (`task.enqueue(conn, ...)` + COMMIT), in
turn, round after round, so that a noisy machine favours none:

- `no limit`: into a queue without a limit (the baseline);
- `limit, 100 waiting`: into a queue limited to 2,000,000 waiting jobs that holds 100;
- `limit, 1M waiting`: the same limit, with 1,000,000 jobs waiting.

The limit is checked against a count refreshed at most once a second and bounded by the
limit, so the last two rows should cost the same as the first. The table shows each
producer's median rate and its ratio to the baseline.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schema is dropped either way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psycopg
from harness import live_of, vacuum
from psycopg import sql

from pgjobs import App
from pgjobs.embedded import temporary_cluster
from pgjobs.migrate import upgrade
from pgjobs.queue_control import set_queue_limit

LIMIT = 2_000_000
PRODUCERS = {"no limit": "free", "limit, 100 waiting": "small", "limit, 1M waiting": "big"}
PREFILL = {"small": 100, "big": 1_000_000}


@contextmanager
def database(url: str | None) -> Iterator[str]:
    with ExitStack() as stack:
        yield url or stack.enter_context(temporary_cluster())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    schema = f"pgjobs_bench_{uuid.uuid4().hex[:8]}"
    with database(args.database_url) as url:
        upgrade(url, schema)
        app = App(url, schema=schema)
        try:
            rates = measure(app, url, schema, args.jobs, args.rounds)
        finally:
            app.close()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    baseline = statistics.median(rates["no limit"])
    print(f"single enqueue + COMMIT, {args.jobs} jobs x {args.rounds} rounds, median jobs/s")
    for label, values in rates.items():
        median = statistics.median(values)
        print(f"  {label:<20} {median:>8,.0f}   {median / baseline:.3f}x")


def measure(app: App, url: str, schema: str, jobs: int, rounds: int) -> dict[str, list[float]]:
    with psycopg.connect(url, autocommit=True) as conn:
        jobs_table = live_of(conn, schema)
        for queue, count in PREFILL.items():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (queue, task, payload)"
                    " SELECT %s, 'bench.noop', '{{}}' FROM generate_series(1, %s)"
                ).format(jobs_table),
                (queue, count),
            )
        vacuum(conn, schema)
    for queue in PREFILL:
        set_queue_limit(app, queue, LIMIT)
    rates: dict[str, list[float]] = {label: [] for label in PRODUCERS}
    with psycopg.connect(url) as conn:
        for round_number in range(rounds):
            order = list(PRODUCERS.items())
            if round_number % 2:
                order.reverse()
            for label, queue in order:
                started = time.perf_counter()
                for n in range(jobs):
                    app.enqueue(conn, "bench.noop", {"n": n}, queue=queue)
                    conn.commit()
                rates[label].append(jobs / (time.perf_counter() - started))
    return rates


if __name__ == "__main__":
    main()
