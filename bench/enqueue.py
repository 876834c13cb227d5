"""Enqueue throughput, reported against a plain INSERT measured in the same run.

    python bench/enqueue.py [--database-url URL] [--repeats 3]

With no `--database-url` and no `PGJOBS_DATABASE_URL`, a throwaway PostgreSQL cluster is
started from the local server binaries and deleted afterwards. Everything is written to a
fresh schema that is dropped at the end.

Absolute jobs/s say more about the machine than about pgjobs, so every figure is also given
as a ratio against the baseline: one plain psycopg INSERT per transaction into a bare table
with the same columns and no index or trigger. Measurements are interleaved round by round
and each row shows the median of the rounds, which keeps a noisy machine from favouring
whichever measurement happened to run during a quiet moment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
from harness import tables_of
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

from pgjobs import App
from pgjobs.data.producer import ENQUEUE_ONE_FORMS
from pgjobs.data.sql import SchemaSQL
from pgjobs.migrate import upgrade

SINGLE_JOBS = 2_000
BULK_SIZES = (10_000, 100_000)
TASK = "bench.send_email"

BARE_TABLE = """
CREATE TABLE {bare} (
    id bigint GENERATED ALWAYS AS IDENTITY,
    queue text NOT NULL,
    task text NOT NULL,
    payload jsonb NOT NULL,
    state text NOT NULL DEFAULT 'available',
    priority integer NOT NULL,
    max_attempts integer NOT NULL,
    run_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
BARE_INSERT = """
INSERT INTO {bare} (queue, task, payload, priority, max_attempts)
VALUES (%s, %s, %s, %s, %s)
RETURNING id
"""

# ENQUEUE_ONE's parameters after the payload (priority, run_at, delay, max_attempts,
# unique_key, meta), for a job with the defaults.
PLAIN_JOB = (0, None, 0.0, 20, None, None)


def payload(n: int) -> dict[str, Any]:
    """A small, realistic argument set."""
    return {"to": f"user{n}@example.com", "template": "welcome", "user_id": n}


@dataclass
class Measurement:
    """One row of the report: a workload and the rate of each round."""

    name: str
    jobs: int
    run: Callable[[], None]
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


class Bench:
    """The workloads, each on one connection and committing as a producer would."""

    def __init__(self, url: str, schema: str) -> None:
        self.app = App(url, schema=schema)
        self.conn = psycopg.connect(url)
        # The jobs tables, `jobs_live` (where jobs are inserted) and `jobs_history`.
        self.jobs = tables_of(self.conn, schema)
        self.bare = sql.Identifier(schema, "bare_jobs")
        self.conn.execute(sql.SQL(BARE_TABLE).format(bare=self.bare))
        self.conn.commit()
        self.bare_insert = sql.SQL(BARE_INSERT).format(bare=self.bare)
        # pgjobs' own statement for one plain job, sent by hand: its cost beside the bare
        # INSERT is the table's (indexes, trigger), beside `enqueue` pgjobs' Python.
        self.jobs_insert = SchemaSQL(schema).render(ENQUEUE_ONE_FORMS[False])

    def close(self) -> None:
        self.conn.close()
        self.app.close()

    def empty_tables(self) -> None:
        """Start every round from empty tables, so later rounds do not pay for earlier ones."""
        tables = sql.SQL(", ").join([*self.jobs, self.bare])
        self.conn.execute(sql.SQL("TRUNCATE {}").format(tables))
        self.conn.commit()

    def plain_inserts(self, count: int) -> None:
        for n in range(count):
            self.conn.execute(self.bare_insert, ("default", TASK, Jsonb(payload(n)), 0, 20))
            self.conn.commit()

    def jobs_inserts(self, count: int) -> None:
        for n in range(count):
            values = ("default", TASK, Jsonb(payload(n)), *PLAIN_JOB)
            self.conn.execute(self.jobs_insert, values).fetchone()
            self.conn.commit()

    def single_enqueues(self, count: int) -> None:
        for n in range(count):
            self.app.enqueue(self.conn, TASK, payload(n))
            self.conn.commit()

    def bulk_enqueue(self, count: int) -> None:
        self.app.enqueue_many(self.conn, [(TASK, payload(n)) for n in range(count)])
        self.conn.commit()


def measure(bench: Bench, measurements: list[Measurement], repeats: int) -> None:
    for _ in range(repeats):
        for measurement in measurements:
            bench.empty_tables()
            started = time.perf_counter()
            measurement.run()
            measurement.rates.append(measurement.jobs / (time.perf_counter() - started))


def report(measurements: list[Measurement], baseline: Measurement, repeats: int) -> Table:
    table = Table(
        title="pgjobs enqueue throughput",
        caption=(
            f"jobs/s: median of {repeats} rounds; range: slowest and fastest round; "
            "vs baseline: median / baseline median"
        ),
    )
    table.add_column("workload", no_wrap=True)
    table.add_column("jobs", justify="right")
    table.add_column("jobs/s", justify="right")
    table.add_column("range", justify="right")
    table.add_column("vs baseline", justify="right")
    for m in measurements:
        table.add_row(
            m.name,
            f"{m.jobs:,}",
            f"{m.median:,.0f}",
            f"{min(m.rates):,.0f}-{max(m.rates):,.0f}",
            f"{m.median / baseline.median:.2f}x",
        )
    return table


@contextmanager
def database(explicit_url: str | None) -> Iterator[tuple[str, str]]:
    """(URL, description): the given server, or a throwaway cluster started for the run."""
    url = explicit_url or os.environ.get("PGJOBS_DATABASE_URL")
    if url:
        yield url, "the given server"
        return
    from pgjobs.embedded import temporary_cluster

    with temporary_cluster() as temporary_url:
        yield temporary_url, "a throwaway local cluster"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is shown")
    args = parser.parse_args()
    console = Console()

    with ExitStack() as stack:
        url, where = stack.enter_context(database(args.database_url))
        schema = f"pgjobs_bench_{uuid.uuid4().hex[:8]}"
        upgrade(url, schema)
        stack.callback(drop_schema, url, schema)
        bench = Bench(url, schema)
        stack.callback(bench.close)
        server = bench.conn.info.parameter_status("server_version")

        baseline = Measurement(
            "baseline INSERT 1/commit",
            SINGLE_JOBS,
            partial(bench.plain_inserts, SINGLE_JOBS),
        )
        measurements = [
            baseline,
            Measurement(
                "same INSERT into jobs 1/commit",
                SINGLE_JOBS,
                partial(bench.jobs_inserts, SINGLE_JOBS),
            ),
            Measurement(
                "enqueue 1/commit",
                SINGLE_JOBS,
                partial(bench.single_enqueues, SINGLE_JOBS),
            ),
            *(
                Measurement(
                    "enqueue_many",
                    size,
                    partial(bench.bulk_enqueue, size),
                )
                for size in BULK_SIZES
            ),
        ]
        console.print(f"PostgreSQL {server} on {where}")
        measure(bench, measurements, args.repeats)
        console.print(report(measurements, baseline, args.repeats))


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
