"""What `--metrics-port` costs a draining worker: the same drain with and without it.

    python bench/metrics_overhead.py [--database-url URL] [--jobs 20000] [--rounds 5]

Each round, per worker setting, drains `--jobs` no-op jobs three ways: without metrics,
and with `--metrics-port` while this script scrapes `/metrics` every second (a far busier
Prometheus than the usual 15 s), one after the other (the order alternates between
rounds); then both at once, head to head, each worker draining `--jobs` of its own in a
schema of its own, made due in one transaction (the two schemas swap roles between
rounds). Two figures per drain:

- the rate, as in `bench/compare.py`: jobs over the window between the first claim and the
  last outcome, read from the table;
- the worker's CPU time per job (user + system, from /proc), counted from when it is up
  and idle to when the queue is empty.

On a machine shared with other work, drains run one after the other swing by tens of
percent: the server's own CPU per job, which metrics do not touch, swings with them. Head
to head, both workers meet the same machine at the same moment, and they compete for its
cores, so whatever CPU the metrics take shows in their rate: that pair's ratio is the
steadier figure, and if anything it overstates the cost.

The jobs are inserted before the workers start, due tomorrow (no NOTIFY), and made due
in one statement once the workers are up, so start-up costs neither figure anything.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schemas are dropped either way.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import psycopg
from harness import live_of, make_partitions, tables_of, vacuum
from psycopg import sql

from pgjobs.data.sql import notify_channel
from pgjobs.embedded import temporary_cluster
from pgjobs.migrate import upgrade

PEERS = Path(__file__).resolve().parent / "peers"
APP = "pgjobs_bench:app"  # bench/peers/pgjobs_bench.py, the drain's no-op task
# The worker's defaults (10 threads, adaptive claim-ahead: compare.py's best drain setting)
# and many threads, where each job's share of the GIL costs most.
SETTINGS = (("--concurrency", "10"), ("--concurrency", "32"))
DRAIN_TIMEOUT = 300.0


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fill(url: str, schema: str, count: int) -> None:
    """`count` jobs due tomorrow in emptied tables, inserted with the NOTIFY trigger off,
    and fresh stats."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = sql.SQL(", ").join(tables_of(conn, schema))
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(tables))
        make_partitions(conn, schema)  # today's and tomorrow's, as the workers keep them
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (task, payload, run_at)"
                    " SELECT 'bench.job', jsonb_build_object('n', g), now() + interval '1 day'"
                    " FROM generate_series(1, %s) g"
                ).format(live_of(conn, schema)),
                (count,),
            )
        vacuum(conn, schema)
        conn.execute("CHECKPOINT")


def make_due(url: str, schemas: list[str]) -> None:
    """Every job of `schemas` due now, in one transaction that also wakes the workers (as
    an insert would), so that every drain starts at its commit."""
    with psycopg.connect(url) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("UPDATE {} SET run_at = now()").format(live_of(conn, schema)))
            conn.execute("SELECT pg_notify(%s, 'default')", (notify_channel(schema),))


def registered(url: str, schema: str) -> bool:
    """Whether a worker is up: its registry row exists."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "workers"))
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return bool(row and row[0])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unfinished(url: str, schema: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE state IN ('available', 'running')")
    with psycopg.connect(url) as conn:
        row = conn.execute(query.format(live_of(conn, schema))).fetchone()
    return int(row[0]) if row else 0


def window_rate(url: str, schema: str, count: int) -> float:
    query = sql.SQL(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at)),"
        " count(*) FILTER (WHERE state = 'completed') FROM {}"
    ).format(sql.Identifier(schema, "jobs"))
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None and row[1] == count, row
    return count / float(row[0])


@contextmanager
def scraping(port: int) -> Iterator[list[int]]:
    """Scrape /metrics every second meanwhile; yields the list of scrape sizes."""
    sizes: list[int] = []
    done = threading.Event()

    def loop() -> None:
        while not done.wait(1.0):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    sizes.append(len(r.read()))
            except OSError:
                pass  # not listening yet

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sizes
    finally:
        done.set()
        thread.join()


@contextmanager
def worker(
    url: str, schema: str, metrics: bool, setting: tuple[str, ...]
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker up and idle on `schema` (with `/metrics` scraped every second if
    `metrics`); stopped with SIGTERM on the way out."""
    port = free_port()
    extra = ["--metrics-port", str(port)] if metrics else []
    command = [
        sys.executable, "-m", "pgjobs", "work", "--app", APP, "--database-url", url,
        "--schema", schema, "--log-level", "WARNING", *setting, *extra,
    ]  # fmt: skip
    with ExitStack() as stack:
        process = subprocess.Popen(command, cwd=PEERS, start_new_session=True)
        stack.callback(process.wait)
        stack.callback(process.send_signal, signal.SIGTERM)
        sizes = stack.enter_context(scraping(port)) if metrics else []
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while not registered(url, schema):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {command} did not start")
            time.sleep(0.1)
        time.sleep(1.0)  # the rest of start-up: first claims, first beats
        yield process
    if metrics and not sizes:
        raise RuntimeError("/metrics was never scraped")


def drain_together(
    url: str, runs: list[tuple[str, bool]], count: int, setting: tuple[str, ...]
) -> list[tuple[float, float]]:
    """Drain `count` jobs in each (schema, metrics) of `runs` at the same time: each
    one's (jobs per second, worker CPU microseconds per job)."""
    for schema, _ in runs:
        fill(url, schema, count)
    with ExitStack() as stack:
        workers = [stack.enter_context(worker(url, *run, setting)) for run in runs]
        cpu_before = [cpu_seconds(w.pid) for w in workers]
        make_due(url, [schema for schema, _ in runs])
        time.sleep(0.5)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        cpu_after: list[float | None] = [None] * len(runs)
        while None in cpu_after:
            for n, (schema, _) in enumerate(runs):
                if cpu_after[n] is None and not unfinished(url, schema):
                    cpu_after[n] = cpu_seconds(workers[n].pid)
            if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
                raise RuntimeError("a worker stopped or stalled")
            time.sleep(0.1)
    return [
        (window_rate(url, schema, count), (after - before) / count * 1e6)
        for (schema, _), before, after in zip(runs, cpu_before, cpu_after, strict=True)
        if after is not None
    ]


Figures = dict[tuple[str, tuple[str, ...], bool], list[tuple[float, float]]]
WAYS = ("one after the other", "head to head")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    schemas = (f"bench_metrics_{run}_a", f"bench_metrics_{run}_b")
    figures: Figures = {}
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        for schema in schemas:
            upgrade(url, schema)
            stack.callback(drop, url, schema)
        for round_ in range(args.rounds):
            swap = round_ % 2 == 1
            for setting in SETTINGS:
                for metrics in (True, False) if swap else (False, True):
                    (result,) = drain_together(url, [(schemas[0], metrics)], args.jobs, setting)
                    note(figures, round_, WAYS[0], setting, metrics, result)
                pair = [(schemas[0], not swap), (schemas[1], swap)]
                for (_, metrics), result in zip(
                    pair, drain_together(url, pair, args.jobs, setting), strict=True
                ):
                    note(figures, round_, WAYS[1], setting, metrics, result)
        print()
        report(figures, args.jobs, args.rounds)


def note(
    figures: Figures,
    round_: int,
    way: str,
    setting: tuple[str, ...],
    metrics: bool,
    result: tuple[float, float],
) -> None:
    figures.setdefault((way, setting, metrics), []).append(result)
    label = "with metrics" if metrics else "without"
    print(
        f"round {round_ + 1} {way}, {' '.join(setting)} {label}:"
        f" {result[0]:,.0f} jobs/s, {result[1]:.0f} us CPU/job",
        flush=True,
    )


def report(figures: Figures, jobs: int, rounds: int) -> None:
    plain, observed = handler_cost()
    print(
        f"CPU per job of its JobEnded event, in a tight loop: {plain:.2f} us logged,"
        f" {observed:.2f} us logged and counted (+{observed - plain:.2f} us)"
    )
    print(f"drain of {jobs:,} no-op jobs, {rounds} rounds: median (min-max)")
    for way in WAYS:
        for setting in SETTINGS:
            name = f"{way}, {' '.join(setting)}"
            for index, unit in ((0, "jobs/s"), (1, "us CPU/job")):
                without = [r[index] for r in figures[(way, setting, False)]]
                with_ = [r[index] for r in figures[(way, setting, True)]]
                # Each round's pair ran back to back or side by side, so its ratio cancels
                # most of the machine's drift; the median of the ratios is the figure.
                paired = statistics.median(w / o for w, o in zip(with_, without, strict=True))
                print(
                    f"{name:40} {unit:10} without {summary(without)}; with metrics "
                    f"{summary(with_)}; change, median of the rounds' pairs {paired - 1:+.1%}"
                )


def handler_cost(repeats: int = 5, calls: int = 50_000) -> tuple[float, float]:
    """CPU microseconds per job of the JobEnded event as a worker sends it (best of
    `repeats` tight loops): (logging alone, as always; logging and the metrics). What the
    garbage collector does in a real drain is not in it."""

    from pgjobs.types import ClaimedJob
    from pgjobs.worker.events import Ending, EventBus, JobEnded
    from pgjobs.worker.log_events import log_event, logged_event_types
    from pgjobs.worker.metrics import WorkerMetrics
    from pgjobs.worker.outcomes import completed

    job = ClaimedJob(1, "default", "bench.job", "{}", 1, 20, time.time())
    outcome = completed(job)

    def per_job(bus: EventBus) -> float:
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            for _ in range(calls):
                if bus.wants(JobEnded):
                    bus.emit(JobEnded(job, Ending.COMPLETED, outcome, 0.0001, "w", time.time()))
            best = min(best, time.process_time() - started)
        return best / calls * 1e6

    logged = EventBus()
    logged.subscribe(log_event, *logged_event_types())
    observed = EventBus()
    observed.subscribe(log_event, *logged_event_types())
    metrics = WorkerMetrics(
        "w", concurrency=1, busy=int, prefetched=int, unwritten=int, leader=bool
    )
    observed.subscribe(metrics.jobs.job_ended, JobEnded)
    return per_job(logged), per_job(observed)


def summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"


def drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
