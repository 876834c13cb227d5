"""What `--metrics-port` costs a draining worker: the same drain with and without it.

    python bench/metrics_overhead.py [--database-url URL] [--jobs 20000] [--rounds 5]

Each round drains `--jobs` no-op jobs twice per worker setting, once without metrics and
once with `--metrics-port` while this script scrapes `/metrics` every second (a far
busier Prometheus than the usual 15 s). The order alternates between rounds so that a
noisy machine favours neither. Two figures per drain:

- the rate, as in `bench/compare.py`: jobs over the window between the first claim and the
  last outcome, read from the table;
- the worker's CPU time per job (user + system, from /proc), counted from when it is up
  and idle to when the queue is empty. On a machine shared with other work the rate
  swings by tens of percent from one run to the next; the CPU a job costs the worker is
  what metrics add to, and it hardly depends on the neighbours.

The jobs are inserted before the worker starts, due tomorrow (no NOTIFY), and made due
in one statement once the worker is up, so start-up costs neither figure anything.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schema is dropped either way.
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
from psycopg import sql

from pgjobs.embedded import temporary_cluster
from pgjobs.migrate import upgrade

PEERS = Path(__file__).resolve().parent / "peers"
APP = "pgjobs_bench:app"  # bench/peers/pgjobs_bench.py, the drain's no-op task
# The worker's defaults (10 threads, adaptive claim-ahead: compare.py's best drain setting)
# and many threads, where each job's share of the GIL costs most.
SETTINGS = (("--concurrency", "10"), ("--concurrency", "32"))
DRAIN_TIMEOUT = 300.0
BATCH = 250  # outcomes per completer batch in the tight loop, as in a drain


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fill(url: str, schema: str, count: int) -> None:
    """`count` jobs due tomorrow, inserted with the NOTIFY trigger off, and fresh stats."""
    jobs = sql.Identifier(schema, "jobs")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(jobs))
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (task, payload, run_at)"
                    " SELECT 'bench.job', jsonb_build_object('n', g), now() + interval '1 day'"
                    " FROM generate_series(1, %s) g"
                ).format(jobs),
                (count,),
            )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(jobs))
        conn.execute("CHECKPOINT")


def make_due(url: str, schema: str) -> None:
    """Every job due now: the worker's next poll (within a second) starts the drain."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {} SET run_at = now()").format(sql.Identifier(schema, "jobs")))


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
    query = sql.SQL("SELECT count(*) FROM {} WHERE state IN ('available', 'running')").format(
        sql.Identifier(schema, "jobs")
    )
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
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


def drain(
    url: str, schema: str, count: int, setting: tuple[str, ...], metrics: bool
) -> tuple[float, float]:
    """(jobs per second, worker CPU microseconds per job) of one drain."""
    fill(url, schema, count)
    port = free_port()
    extra = ["--metrics-port", str(port)] if metrics else []
    command = [
        sys.executable, "-m", "pgjobs", "work", "--app", APP, "--database-url", url,
        "--schema", schema, "--log-level", "WARNING", *setting, *extra,
    ]  # fmt: skip
    with ExitStack() as stack:
        worker = subprocess.Popen(command, cwd=PEERS, start_new_session=True)
        stack.callback(worker.wait)
        stack.callback(worker.send_signal, signal.SIGTERM)
        sizes = stack.enter_context(scraping(port)) if metrics else []
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while not registered(url, schema):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {command} did not start")
            time.sleep(0.1)
        time.sleep(1.0)  # the rest of start-up: first claims, first beats
        cpu_before = cpu_seconds(worker.pid)
        make_due(url, schema)
        time.sleep(0.5)
        while unfinished(url, schema):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {command} stopped or stalled")
            time.sleep(0.1)
        cpu = cpu_seconds(worker.pid) - cpu_before
    if metrics and not sizes:
        raise RuntimeError("/metrics was never scraped")
    return window_rate(url, schema, count), cpu / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    schema = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        upgrade(url, schema)
        stack.callback(drop, url, schema)
        rates: dict[tuple[tuple[str, ...], bool], list[float]] = {}
        cpu: dict[tuple[tuple[str, ...], bool], list[float]] = {}
        for round_ in range(args.rounds):
            for setting in SETTINGS:
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for metrics in order:
                    rate, micros = drain(url, schema, args.jobs, setting, metrics)
                    rates.setdefault((setting, metrics), []).append(rate)
                    cpu.setdefault((setting, metrics), []).append(micros)
                    label = "with metrics" if metrics else "without"
                    print(
                        f"round {round_ + 1} {' '.join(setting)} {label}: {rate:,.0f} jobs/s,"
                        f" {micros:.0f} us CPU/job",
                        flush=True,
                    )
        print()
        plain, observed = handler_cost()
        print(
            f"CPU per job of its JobEnded event, in a tight loop: {plain:.2f} us logged,"
            f" {observed:.2f} us logged and counted (+{observed - plain:.2f} us)"
        )
        print(f"drain of {args.jobs:,} no-op jobs, {args.rounds} rounds: median (min-max)")
        for setting in SETTINGS:
            name = " ".join(setting)
            for figures, unit in ((rates, "jobs/s"), (cpu, "us CPU/job")):
                without, with_ = figures[(setting, False)], figures[(setting, True)]
                # Each round's pair ran back to back, so its ratio cancels most of the
                # machine's drift; the median of the ratios is the figure to read.
                paired = statistics.median(w / o for w, o in zip(with_, without, strict=True))
                print(
                    f"{name:30} {unit:10} without {summary(without)}; with metrics "
                    f"{summary(with_)}; change, median of the rounds' pairs {paired - 1:+.1%}"
                )


def handler_cost(repeats: int = 5, calls: int = 50_000) -> tuple[float, float]:
    """CPU microseconds per job of the events a worker sends (best of `repeats` tight
    loops): a JobEnded per job, and an OutcomesWritten per `BATCH` jobs as the completer
    writes them (where the metrics count). (Logging alone, as always; logging and the
    metrics.)"""

    from pgjobs.worker.events import Ending, EventBus, JobEnded, OutcomesWritten
    from pgjobs.worker.jobs import ClaimedJob, completed
    from pgjobs.worker.log_events import log_event, logged_event_types
    from pgjobs.worker.metrics import WorkerMetrics

    job = ClaimedJob(1, "default", "bench.job", "{}", 1, 20, time.time())
    outcome = completed(job)
    written, applied = [outcome] * BATCH, frozenset({job.id})

    def per_job(bus: EventBus) -> float:
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            for n in range(calls):
                if bus.wants(JobEnded):
                    bus.emit(JobEnded(job, Ending.COMPLETED, outcome, 0.0001, "w", time.time()))
                if n % BATCH == BATCH - 1:
                    bus.emit(OutcomesWritten(written, applied))
            best = min(best, time.process_time() - started)
        return best / calls * 1e6

    logged = EventBus()
    logged.subscribe(log_event, *logged_event_types())
    observed = EventBus()
    observed.subscribe(log_event, *logged_event_types())
    metrics = WorkerMetrics(
        "w", concurrency=1, busy=int, prefetched=int, unwritten=int, leader=bool
    )
    observed.subscribe(metrics.jobs.job_ended, JobEnded)  # type: ignore[arg-type]
    observed.subscribe(metrics.jobs.outcomes_written, OutcomesWritten)
    return per_job(logged), per_job(observed)


def summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"


def drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
