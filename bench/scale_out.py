"""Scale-out: 1, 2 and 4 worker processes draining one PostgreSQL, and one worker's memory
over a million jobs (issue 30).

    python bench/scale_out.py [--database-url URL] [--jobs 100000] [--rounds 3]
                              [--processes 1,2,4] [--concurrency 10] [--rss-jobs 1000000]

Drains. Each round drains a backlog of `--jobs` no-op jobs (`bench/peers/pgjobs_bench.py`'s
`bench.job`, compare.py's drain task) once with each number of `pgjobs work` processes in
`--processes`, each process with `--concurrency` threads and the worker's defaults
(durable claims); the order rotates from round to round, so a slow spell of the machine
falls on every setting alike. Before each drain the tables are emptied (`harness.reset`),
the queue is paused, the backlog is enqueued with `app.enqueue_many` (chunks of 100,000,
each its own transaction: pgjobs COPYs them in), then VACUUM ANALYZE and a checkpoint;
the workers start, and once every one has registered (and had a second more) the queue is
resumed, which wakes them all at once. So no process has a head start while the others
import, and the table the drain starts from has no dead rows (a backlog made due by an
UPDATE would have one dead version of every job).

A drain's rate is its jobs over the window from the first claim to the last outcome, both
read afterwards from the table (`started_at`, `finished_at`), as compare.py reads them.
Over the same window `bench/comparison/common/cpu.py` gives the CPU of the server's
backends serving the drain and of the worker processes, per job, from the processes' CPU
clocks (the server must run on this machine: the throwaway cluster does). "cores busy" is
the rate times both: how many cores the drain kept busy, server + client. WAL is
`pg_current_wal_lsn()` from the resume to the end of the drain, per job (the whole
cluster's: an autovacuum meanwhile counts too). "connections" are the database's client
connections at the drain's end but the script's own: the workers', on a server that
serves nothing else. A setting's figures are the medians of its rounds; the rate's range
is the slowest and the fastest round, and its ratio is to the first setting's median
(`--rounds 0` skips the drains).

Memory (`--rss-jobs`, 0 to skip). `--rss-jobs` jobs are enqueued up front (chunks of
100,000 with `enqueue_many`), then one worker process (`--concurrency` threads) drains
them all. Its resident set (`VmRSS` from /proc) is read once it is up and then each time
another 100,000 jobs have completed (counted from `jobs_live`'s deleted rows in
pg_stat_user_tables: each completion moves a row to the history; the server publishes the
count within a second, so a sample is taken a few thousand jobs past its mark, and says
how many), and once all are done, with the peak (`VmHWM`). The growth from the first
100,000 to the end is what the target "worker RSS flat over 1,000,000 jobs" is about.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; on a given server the script makes a schema `bench_scale_<random>`
and drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from subprocess import Popen
from typing import Any

import psycopg
from comparison.common.cluster import scalar_row
from comparison.common.cpu import CpuSampler, sampling_cpu
from comparison.common.workers import WorkerProcess
from harness import (
    DRAIN_TIMEOUT,
    HERE,
    drop,
    jobs_of,
    live_of,
    median,
    reset,
    say,
    scalar,
    spread,
    started_workers,
    vacuum,
)
from psycopg import sql

import pgjobs

APP = "pgjobs_bench:app"  # bench/peers/pgjobs_bench.py, compare.py's no-op drain task
TASK = "bench.job"
QUEUE = "default"
CHUNK = 100_000  # jobs per enqueue_many call and transaction
RSS_EVERY = 100_000  # jobs between two memory samples
POLL = 0.1  # seconds between looks at the tables
MB = 1024 * 1024

# Whether any job waits or runs, whether any has failed an attempt, and how many rows
# jobs_live has lost: completions, as the server publishes them (within a second). Each
# through its partial index: by the statistics of the full backlog an EXISTS would scan
# the table, stopping at its first row, but as the drain goes on the front of the table
# holds ever more dead rows; the claim's ORDER BY keeps the planner on the claim's index
# (an EXISTS would drop it).
DELETED = "SELECT coalesce(n_tup_del, 0) FROM pg_stat_user_tables WHERE relid = %s::regclass"
LOOK = (
    "SELECT (SELECT id FROM {live} WHERE state = 'available'"
    " ORDER BY priority DESC, run_at, id LIMIT 1) IS NOT NULL"
    " OR EXISTS (SELECT FROM {live} WHERE state = 'running'),"
    " EXISTS (SELECT FROM {live} WHERE errors <> '[]'::jsonb), (" + DELETED + ")"
)
WINDOW = (
    "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),"
    " count(*) FILTER (WHERE state = 'completed') FROM {}"
)
# The client connections to the database but this script's: the workers' at the end of
# a drain, on a server that serves nothing else.
CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND backend_type = 'client backend' AND pid <> ALL(%s)"
)
RESUMING = "SELECT pg_current_wal_lsn(), extract(epoch FROM clock_timestamp())"


@dataclass(frozen=True)
class Drain:
    """One drain's figures: jobs/s, CPU µs per job of the server's backends and of the
    workers, the workers' connections, and WAL bytes per job."""

    rate: float
    server_us: float
    client_us: float
    connections: int
    wal: float

    @property
    def cores(self) -> tuple[float, float]:
        """Cores kept busy by the server's backends and by the workers."""
        return self.rate * self.server_us / 1e6, self.rate * self.client_us / 1e6


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def enqueue(app: pgjobs.App, conn: psycopg.Connection[Any], count: int) -> None:
    """`count` no-op jobs in chunks of CHUNK, each `enqueue_many` call its own transaction;
    then fresh statistics and a checkpoint, so the drain starts without inherited debt."""
    for start in range(0, count, CHUNK):
        items = [(TASK, {"n": n}) for n in range(start, min(count, start + CHUNK))]
        with conn.transaction():
            app.enqueue_many(conn, items)
    vacuum(conn, app.schema)
    conn.execute("CHECKPOINT")


def worker_env() -> dict[str, str]:
    """The workers import their app from bench/peers, and pgjobs from PYTHONPATH if it is
    set (as this script does)."""
    path = [str(HERE / "peers"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def wait_drained(
    conn: psycopg.Connection[Any],
    schema: str,
    workers: Sequence[Popen[bytes]],
    timeout: float,
    each: Callable[[int], None] = lambda deleted: None,
) -> None:
    """Until no job waits or runs, giving `each` jobs_live's deleted rows at every look;
    fails at once when a job fails an attempt (the worker is broken: nothing measured
    would mean anything), when a worker exits, or when `timeout` passes. On `conn`, which
    the CPU sampler leaves out (harness.wait_drained polls on a connection of its own,
    which would count as serving the drain)."""
    live = live_of(conn, schema)
    look = sql.SQL(LOOK).format(live=live)
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(look, [live.as_string(conn)]).fetchone()
        assert row is not None
        unfinished, failing, deleted = row
        if failing:
            raise RuntimeError(f"a job on {schema} failed an attempt: see the workers' log")
        each(int(deleted))
        if not unfinished:
            return
        if any(p.poll() is not None for p in workers) or time.monotonic() > deadline:
            raise RuntimeError(f"the workers on {schema} stopped or stalled")
        time.sleep(POLL)


def window(conn: psycopg.Connection[Any], schema: str, count: int) -> tuple[float, float]:
    """The first claim and the last outcome (epoch seconds, the server's clock); all
    `count` jobs must have completed."""
    row = conn.execute(sql.SQL(WINDOW).format(jobs_of(schema))).fetchone()
    if row is None or row[2] != count:
        raise RuntimeError(f"{row[2] if row else 0} of {count} jobs completed")
    return float(row[0]), float(row[1])


def watch(sampler: CpuSampler, workers: Sequence[Popen[bytes]]) -> None:
    """Have the sampler read the workers' CPU clocks, and wait for its next samples: a
    process it has not read yet counts as 0 until it has, so the CPU of their start-up
    would fall into the first interval it reads them in (on a busy machine the sampler's
    thread may wait long enough for that interval to reach into the drain)."""
    taken = len(sampler.times)
    sampler.watch([worker.pid for worker in workers])
    while len(sampler.times) < taken + 2:
        time.sleep(0.01)


def drain(url: str, app: pgjobs.App, processes: int, args: argparse.Namespace) -> Drain:
    """One drain of `args.jobs` by `processes` workers, as the docstring says."""
    schema, count = app.schema, args.jobs
    reset(url, schema)
    options = ["--concurrency", str(args.concurrency)]
    with connect(url) as conn:
        # On this connection, not the App's pool: none of its connections stays open in
        # the database to count as serving the drain.
        app.data.admin.pause_queue(conn, QUEUE)
        enqueue(app, conn, count)
        with (
            sampling_cpu(url, {conn.info.backend_pid}) as sampler,
            started_workers(
                url, schema, processes, app=APP, options=options, env=worker_env()
            ) as workers,
        ):
            watch(sampler, workers)
            row = conn.execute(RESUMING).fetchone()
            assert row is not None
            before, resumed = row
            app.data.admin.resume_queue(conn, QUEUE)  # and wakes the workers
            wait_drained(conn, schema, workers, DRAIN_TIMEOUT * max(1, count / 100_000))
            wal = float(scalar_row(conn, "SELECT pg_current_wal_lsn() - %s::pg_lsn", [before]))
            connections = int(scalar_row(conn, CONNECTIONS, [list(sampler.excluded)]))
        first, last = window(conn, schema, count)
    if first < float(resumed):
        raise RuntimeError("a job started before the queue was resumed: is pause ignored?")
    cpu = sampler.between(first, last).per_job(count)
    rate = count / (last - first)
    figures = Drain(rate, cpu["server_us"], cpu["client_us"], connections, wal / count)
    say(
        f"  {processes} process(es): {figures.rate:,.0f} jobs/s, CPU per job "
        f"{figures.server_us:.0f} µs server, {figures.client_us:.0f} µs client, "
        f"{figures.wal:,.0f} WAL bytes"
    )
    return figures


def drains(url: str, app: pgjobs.App, args: argparse.Namespace) -> dict[int, list[Drain]]:
    """Every setting once a round, in an order that rotates from round to round."""
    settings: list[int] = args.processes
    results: dict[int, list[Drain]] = {n: [] for n in settings}
    for number in range(args.rounds):
        turn = number % len(settings)
        say(f"round {number + 1} of {args.rounds}")
        for processes in settings[turn:] + settings[:turn]:
            results[processes].append(drain(url, app, processes, args))
    return results


def drain_table(results: dict[int, list[Drain]]) -> str:
    first = next(iter(results))
    lines = [
        f"| processes | jobs/s (range) | vs {first} process{'es' if first > 1 else ''} "
        "| server µs/job | client µs/job | cores busy: server + client | connections "
        "| WAL bytes/job |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = median([d.rate for d in results[first]])
    for processes, rounds in results.items():
        rate = median([d.rate for d in rounds])
        server, client = (median([d.cores[k] for d in rounds]) for k in (0, 1))
        lines.append(
            f"| {processes} | {spread([d.rate for d in rounds])} | {rate / base:.2f}x "
            f"| {median([d.server_us for d in rounds]):.0f} "
            f"| {median([d.client_us for d in rounds]):.0f} "
            f"| {server + client:.2f} = {server:.2f} + {client:.2f} "
            f"| {median([float(d.connections) for d in rounds]):.0f} "
            f"| {median([d.wal for d in rounds]):,.0f} |"
        )
    return "\n".join(lines)


@dataclass
class Memory:
    """The worker's resident set at (jobs completed, bytes) samples, and its peak."""

    samples: list[tuple[int, int]]
    peak: int
    seconds: float  # from the first claim to the last outcome


def memory(url: str, app: pgjobs.App, args: argparse.Namespace) -> Memory:
    """One worker drains `args.rss_jobs` enqueued up front; its RSS at every RSS_EVERY
    jobs completed (as pg_stat_user_tables counts them)."""
    schema, total = app.schema, args.rss_jobs
    reset(url, schema)
    with connect(url) as conn:
        say(f"memory: enqueueing {total:,} jobs")
        enqueue(app, conn, total)
        table = live_of(conn, schema).as_string(conn)
        deleted = int(scalar_row(conn, DELETED, [table]))
        options = ["--concurrency", str(args.concurrency)]
        with started_workers(url, schema, 1, app=APP, options=options, env=worker_env()) as up:
            (process,) = up
            worker = WorkerProcess(process, Path(os.devnull), "worker")
            samples: list[tuple[int, int]] = []

            def sample(now_deleted: int) -> None:
                done = now_deleted - deleted
                if not samples or done >= (samples[-1][0] // RSS_EVERY + 1) * RSS_EVERY:
                    samples.append((done, worker.rss_bytes()))
                    say(f"  {done:,} jobs: {samples[-1][1] / MB:.1f} MB")

            timeout = DRAIN_TIMEOUT * max(1, total / 100_000)
            wait_drained(conn, schema, [process], timeout, sample)
            if not samples or samples[-1][0] != total:
                samples.append((total, worker.rss_bytes()))
            peak = worker.peak_bytes()
        first, last = window(conn, schema, total)
    return Memory(samples, peak, last - first)


def memory_table(found: Memory) -> str:
    lines = ["| jobs completed | RSS MB |", "| ---: | ---: |"]
    lines += [f"| {done:,} | {rss / MB:.1f} |" for done, rss in found.samples]
    end_done, end_rss = found.samples[-1]
    note = f"peak (VmHWM) {found.peak / MB:.1f} MB; {end_done:,} jobs in {found.seconds:.0f} s."
    first = next(((d, r) for d, r in found.samples if d >= RSS_EVERY), None)
    if first is not None and first[0] < end_done:
        growth = (end_rss - first[1]) / MB
        per_job = growth * MB / (end_done - first[0])
        note = (
            f"Growth from {first[0]:,} to {end_done:,} jobs: {growth:+.1f} MB "
            f"({per_job:+.2f} bytes per job); " + note
        )
    return "\n".join([*lines, "", note])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per drain")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each setting")
    parser.add_argument(
        "--processes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4],
        help="worker processes of each setting, comma-separated",
    )
    parser.add_argument("--concurrency", type=int, default=10, help="threads per worker")
    parser.add_argument(
        "--rss-jobs", type=int, default=1_000_000, help="jobs of the memory run; 0: none"
    )
    return parser.parse_args()


def main() -> None:
    from pgjobs.embedded import temporary_cluster
    from pgjobs.migrate import upgrade

    args = parse_args()
    began = time.monotonic()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
        upgrade(url, schema)
        stack.callback(drop, url, schema)
        app = pgjobs.App(url, schema=schema)
        stack.callback(app.close)
        results = drains(url, app, args) if args.rounds and args.jobs else {}
        found = memory(url, app, args) if args.rss_jobs else None
        version, fsync, commit = (
            scalar(url, f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit")
        )
    print(
        f"pgjobs scale-out: `pgjobs work --concurrency {args.concurrency}` processes on one "
        f"PostgreSQL {version} (fsync {fsync}, synchronous_commit {commit}), "
        f"{os.cpu_count()} cores, {datetime.now(timezone.utc):%Y-%m-%d}, "
        f"{time.monotonic() - began:.0f} s in all"
    )
    if results:
        print(f"\nDrains of {args.jobs:,} no-op jobs, {args.rounds} round(s):\n")
        print(drain_table(results))
    if found:
        print(f"\nOne worker's memory over {args.rss_jobs:,} jobs:\n")
        print(memory_table(found))


if __name__ == "__main__":
    main()
