"""Worker benchmark: drain throughput against a bare SKIP LOCKED loop, and pickup latency.

    python bench/worker.py [--database-url URL] [--jobs 20000] [--concurrency 8]

With no URL (and no PGJOBS_DATABASE_URL / DATABASE_URL) it runs on a throwaway cluster
from `pgjobs.embedded.temporary_cluster()`. Everything lives in a fresh schema that is
dropped at the end.

The worker under test is a `pgjobs work --app bench.bench_app:app` subprocess, so it does
not share a GIL with the code that measures it.

Drain throughput: `--jobs` no-op jobs are enqueued with `enqueue_many` before the worker
starts; the clock runs from the worker's first claim to the last completion, both read
from the rows (`min(started_at)`, `max(finished_at)`), so interpreter start-up is left
out (and shown separately). The baseline is the least a SKIP LOCKED queue can do: the
same number of rows in a bare table with a partial index, claimed and then completed one
row per transaction by `--concurrency` threads with a connection each, timed the same
way. Runs alternate baseline / pgjobs and the median of `--repeats` is reported.

Idle pickup latency: an idle worker (concurrency 4) gets jobs one at a time, each
committed on its own and spaced so the worker is idle again; the task writes the
wall-clock time it started, the producer the time its commit returned. Run once with the
default poll interval and once with `--poll-interval 5`: if NOTIFY delivers the jobs, the
two barely differ.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from rich import box
from rich.console import Console
from rich.table import Table

from pgjobs import App
from pgjobs.config import database_url_from_env, normalize_url
from pgjobs.embedded import temporary_cluster
from pgjobs.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent
# Task names of bench/bench_app.py, which only the worker subprocess imports.
NOOP = "bench.noop"
RECORD_START = "bench.record_start"
LATENCY_CONCURRENCY = 4
LATENCY_SPACING = 0.02
# How often the bench looks at the queue. The drain window comes from the rows' own
# timestamps, so a slow poll costs no precision and keeps the observer's load low.
DRAIN_POLL = 0.25
LATENCY_POLL = 0.05
TIMEOUT = 600.0

BASELINE_DDL = """
CREATE TABLE {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state text NOT NULL DEFAULT 'available',
    payload jsonb NOT NULL DEFAULT '{{}}',
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX ON {table} (id) WHERE state = 'available';
"""
BASELINE_CLAIM = """
UPDATE {table} SET state = 'running', started_at = now()
WHERE id = (
    SELECT id FROM {table} WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
BASELINE_COMPLETE = "UPDATE {table} SET state = 'completed', finished_at = now() WHERE id = %s"
# The drain window as the rows record it: first claim to last completion.
WINDOW = """
SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)), count(*)
FROM {table} WHERE state = 'completed'
"""


@dataclass(frozen=True)
class Drain:
    """One drain run: seconds from first claim to last completion, and worker start-up."""

    seconds: float
    startup: float | None = None


@dataclass(frozen=True)
class Latencies:
    """Commit-to-start latencies of one idle-worker run, in milliseconds."""

    label: str
    values: list[float]

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.values)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Bench:
    """The benchmark's schema, connections and worker subprocesses."""

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self.jobs = sql.Identifier(schema, "jobs")
        self.starts = sql.Identifier(schema, "starts")
        self.baseline = sql.Identifier(schema, "baseline_jobs")
        self.app = App(url, schema=schema)
        self.admin = psycopg.connect(url, autocommit=True)

    def q(self, template: str, **identifiers: sql.Identifier) -> sql.Composed:
        """A statement with these identifiers quoted into it."""
        return sql.SQL(template).format(**identifiers)

    def setup(self) -> None:
        upgrade(self.url, self.schema)
        self.admin.execute(
            self.q(
                "CREATE TABLE {t} (job_id bigint PRIMARY KEY, started float8 NOT NULL)",
                t=self.starts,
            )
        )
        self.admin.execute(self.q(BASELINE_DDL, table=self.baseline))

    def teardown(self) -> None:
        self.app.close()
        self.admin.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
        )
        self.admin.close()

    def server_version(self) -> str:
        row = self.admin.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    # -- drain -------------------------------------------------------------------------

    def window(self, table: sql.Identifier, expected: int) -> tuple[float, float]:
        row = self.admin.execute(self.q(WINDOW, table=table)).fetchone()
        assert row is not None
        first, last, count = row
        if count != expected:
            raise RuntimeError(f"{count} of {expected} jobs completed in {table.as_string()}")
        return float(first), float(last)

    def drain_baseline(self, jobs: int, concurrency: int) -> Drain:
        t = self.baseline
        self.admin.execute(self.q("TRUNCATE {t} RESTART IDENTITY", t=t))
        self.admin.execute(
            self.q("INSERT INTO {t} (payload) SELECT '{{}}' FROM generate_series(1, %s)", t=t),
            (jobs,),
        )
        self.admin.execute(self.q("VACUUM ANALYZE {t}", t=t))
        claim = self.q(BASELINE_CLAIM, table=t)
        complete = self.q(BASELINE_COMPLETE, table=t)
        connections = [psycopg.connect(self.url, autocommit=True) for _ in range(concurrency)]
        errors: list[BaseException] = []

        def loop(conn: psycopg.Connection[Any]) -> None:
            try:
                while (row := conn.execute(claim).fetchone()) is not None:
                    conn.execute(complete, (row[0],))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=loop, args=(c,)) for c in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for conn in connections:
            conn.close()
        if errors:
            raise errors[0]
        first, last = self.window(t, jobs)
        return Drain(last - first)

    def drain_pgjobs(self, jobs: int, concurrency: int) -> Drain:
        self.admin.execute(self.q("TRUNCATE {t} RESTART IDENTITY", t=self.jobs))
        self.app.enqueue_many(None, [(NOOP, {})] * jobs)
        self.admin.execute(self.q("VACUUM ANALYZE {t}", t=self.jobs))
        unfinished = self.q(
            "SELECT (SELECT count(*) FROM {t} WHERE state = 'available')"
            " + (SELECT count(*) FROM {t} WHERE state = 'running')",
            t=self.jobs,
        )
        spawned = time.time()
        with self.worker(concurrency) as process:
            deadline = time.monotonic() + TIMEOUT
            while True:
                row = self.admin.execute(unfinished).fetchone()
                if row is not None and row[0] == 0:
                    break
                process.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not drain {jobs} jobs in {TIMEOUT:g}s")
                time.sleep(DRAIN_POLL)
        first, last = self.window(self.jobs, jobs)
        return Drain(last - first, startup=first - spawned)

    # -- latency -----------------------------------------------------------------------

    def pickup_latency(self, label: str, count: int, *worker_args: str) -> Latencies:
        self.admin.execute(self.q("TRUNCATE {j}, {s} RESTART IDENTITY", j=self.jobs, s=self.starts))
        committed: dict[int, float] = {}
        with (
            self.worker(LATENCY_CONCURRENCY, *worker_args) as process,
            psycopg.connect(self.url) as producer,
        ):
            # A first job proves the worker is up and listening; it is not measured.
            warmup = self.app.enqueue(None, RECORD_START)
            self.wait_for_starts(1, process)
            time.sleep(0.5)
            for _ in range(count):
                job_id = self.app.enqueue(producer, RECORD_START)
                producer.commit()
                committed[job_id] = time.time()
                time.sleep(LATENCY_SPACING)
            self.wait_for_starts(count + 1, process)
        rows = self.admin.execute(self.q("SELECT job_id, started FROM {s}", s=self.starts))
        started = {job_id: value for job_id, value in rows if job_id != warmup}
        return Latencies(label, [(started[j] - committed[j]) * 1000 for j in committed])

    def wait_for_starts(self, count: int, process: WorkerProcess) -> None:
        query = self.q("SELECT count(*) FROM {s}", s=self.starts)
        deadline = time.monotonic() + 60
        while (row := self.admin.execute(query).fetchone()) is None or row[0] < count:
            process.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row and row[0]} of {count} jobs started in 60s")
            time.sleep(LATENCY_POLL)

    # -- the worker under test ---------------------------------------------------------

    @contextlib.contextmanager
    def worker(self, concurrency: int, *extra: str) -> Iterator[WorkerProcess]:
        """A `pgjobs work` subprocess, stopped with SIGTERM (a graceful shutdown) after."""
        command = [
            sys.executable,
            "-m",
            "pgjobs",
            "work",
            "--app",
            "bench.bench_app:app",
            "--concurrency",
            str(concurrency),
            "--log-level",
            "WARNING",
            *extra,
        ]
        env = {**os.environ, "PGJOBS_DATABASE_URL": self.url, "PGJOBS_SCHEMA": self.schema}
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
            try:
                yield WorkerProcess(process, log)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@dataclass(frozen=True)
class WorkerProcess:
    """The worker under test and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def check_alive(self) -> None:
        """Fail with the worker's output if it exited early."""
        if self.process.poll() is None:
            return
        self.log.seek(0)
        output = self.log.read().decode(errors="replace")
        raise RuntimeError(f"the worker exited with status {self.process.returncode}:\n{output}")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(url: str, where: str, args: argparse.Namespace) -> None:
    bench = Bench(url, f"pgjobs_bench_{uuid.uuid4().hex[:8]}")
    bench.setup()
    try:
        version = bench.server_version()
        baseline: list[Drain] = []
        pgjobs: list[Drain] = []
        for n in range(1, args.repeats + 1):
            # Alternating keeps slow drift (autovacuum, caches) from favouring one side.
            baseline.append(bench.drain_baseline(args.jobs, args.concurrency))
            say(f"run {n}/{args.repeats}: baseline {baseline[-1].seconds:.2f}s")
            pgjobs.append(bench.drain_pgjobs(args.jobs, args.concurrency))
            say(f"run {n}/{args.repeats}: pgjobs   {pgjobs[-1].seconds:.2f}s")
        latencies = []
        for label, worker_args in (
            ("default poll (1 s)", ()),
            ("--poll-interval 5", ("--poll-interval", "5")),
        ):
            latencies.append(bench.pickup_latency(label, args.latency_jobs, *worker_args))
            say(f"latency: {label} done")
    finally:
        bench.teardown()
    report(args, where, version, baseline, pgjobs, latencies)


def report(
    args: argparse.Namespace,
    where: str,
    version: str,
    baseline: Sequence[Drain],
    pgjobs: Sequence[Drain],
    latencies: Sequence[Latencies],
) -> None:
    """Print the results as Markdown tables, ready to paste into a README."""
    base = statistics.median(d.seconds for d in baseline)
    ours = statistics.median(d.seconds for d in pgjobs)
    startup = statistics.median(d.startup for d in pgjobs if d.startup is not None)
    drain = markdown_table("", "seconds", "jobs/s", "throughput vs baseline", "each run (s)")
    for label, median, runs in (
        ("bare SKIP LOCKED loop, 1 row/txn", base, baseline),
        ("pgjobs work (subprocess)", ours, pgjobs),
    ):
        drain.add_row(
            label,
            f"{median:.2f}",
            f"{args.jobs / median:,.0f}",
            f"{base / median:.2f}x",
            " ".join(f"{d.seconds:.2f}" for d in runs),
        )
    latency = markdown_table("worker", "p50 ms", "p95 ms", "p99 ms", "max ms")
    for result in latencies:
        latency.add_row(
            result.label,
            *(f"{result.percentile(p):.1f}" for p in (50, 95, 99)),
            f"{max(result.values):.1f}",
        )
    print(
        f"PostgreSQL {version} ({where}), {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}\n\n"
        f"Drain {args.jobs:,} no-op jobs, concurrency {args.concurrency}, median of "
        f"{args.repeats} runs, first claim to last completion:\n\n"
        f"{render(drain)}\n\n"
        f"pgjobs worker start-up (spawn to first claim, not counted): {startup:.2f}s\n\n"
        f"Idle pickup latency, commit to task start: {args.latency_jobs} jobs committed one "
        f"at a time {LATENCY_SPACING * 1000:.0f} ms apart, worker concurrency "
        f"{LATENCY_CONCURRENCY}:\n\n"
        f"{render(latency)}"
    )


def markdown_table(*columns: str) -> Table:
    """A table drawn as Markdown; the first column left-aligned, the others right."""
    table = Table(box=box.MARKDOWN)
    for n, column in enumerate(columns):
        table.add_column(column, justify="left" if n == 0 else "right")
    return table


def render(table: Table) -> str:
    """The table as text, without the blank border lines the Markdown box draws."""
    console = Console(file=io.StringIO(), width=200, highlight=False, markup=False)
    with console.capture() as captured:
        console.print(table)
    lines = (line.rstrip() for line in captured.get().splitlines())
    return "\n".join(line for line in lines if line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: PGJOBS_DATABASE_URL, else a temp cluster")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain run")
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads for drains")
    parser.add_argument("--repeats", type=int, default=3, help="drain runs per side")
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs per latency run")
    args = parser.parse_args()
    url = args.database_url or database_url_from_env()
    if url:
        run(normalize_url(url), "given server", args)
        return
    say("starting a throwaway PostgreSQL cluster...")
    with temporary_cluster() as temporary:
        run(temporary, "throwaway cluster, default settings", args)


if __name__ == "__main__":
    main()
