"""pgjobs behind PgBouncer: what no prepared statements cost, and pickup through the pooler.

    python bench/pooler.py prepared [--repeats 5]     # direct connection only
    python bench/pooler.py pickup [--jobs 200] [--rounds 2]

Both start a throwaway PostgreSQL (`pgjobs.embedded.temporary_cluster()`) unless
`--database-url` or `PGJOBS_DATABASE_URL` names one; `pickup` also starts a PgBouncer in
transaction mode in front of it (the tests' launcher, `tests/helpers/pgbouncer.py`; needs
the `pgbouncer` program). Each run works in a fresh schema or database and drops it.

`prepared` measures, on a direct connection, a single-enqueue loop through pgjobs' own
pool (`conn=None`, one commit each) with psycopg's server-side prepared statements
(`prepare_threshold=5`, what the pool uses on a connection proven direct) and without
(`None`, what it uses otherwise), alternating every 100 jobs; median and range of the
rounds.

`pickup` measures idle pickup latency as `bench/compare.py` does (a worker of
`bench/peers/pgjobs_bench.py`, `--concurrency 4`, tables holding 10,000 finished jobs,
jobs committed one at a time, 25 ms apart; latency = task start - commit) for a worker
and producer on a direct connection, through the pooler with `--listen-database-url`
direct, and through the pooler without it (the notification check's fast poll).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from harness import make_partitions, next_id, tables_of, vacuum
from psycopg import sql
from rich.console import Console
from rich.table import Table

import pgjobs.pooler
from pgjobs import App
from pgjobs.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "bench" / "peers"
sys.path.insert(0, str(REPO))  # the PgBouncer launcher lives with the tests

TASK = "bench.job"  # the task of bench/peers/pgjobs_bench.py
SETTINGS: dict[str, int | None] = {"prepared (5)": 5, "not prepared": None}
console = Console()


@contextlib.contextmanager
def server(explicit: str | None, options: dict[str, str]) -> Iterator[str]:
    url = explicit or os.environ.get("PGJOBS_DATABASE_URL")
    if url:
        yield url
        return
    from pgjobs.embedded import temporary_cluster

    with temporary_cluster(options) as temporary_url:
        yield temporary_url


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    schema = f"pgjobs_bench_{uuid.uuid4().hex[:8]}"
    upgrade(url, schema)
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def truncate(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = sql.SQL(", ").join(tables_of(conn, schema))
        conn.execute(sql.SQL("TRUNCATE {}").format(tables))


# --- prepared -------------------------------------------------------------------------


def bench_app(url: str, schema: str) -> App:
    app = App(url, schema=schema)

    @app.task(name=TASK)
    def job(n: int) -> None:
        """A no-op."""

    return app


def opened_app(url: str, schema: str, threshold: int | None) -> App:
    """An App whose pool's connections were opened with `threshold`."""
    pgjobs.pooler.PREPARE_THRESHOLD = threshold
    app = bench_app(url, schema)
    app.enqueue(None, TASK, {"n": -1})  # opens the pool outside the timing
    return app


def single_enqueues(url: str, schema: str, count: int, block: int = 100) -> dict[str, float]:
    """Jobs per second of `count` enqueues through each setting's own pool, one commit
    each, in alternating blocks of `block` so that the machine's ups and downs fall on
    both settings alike."""
    apps = {setting: opened_app(url, schema, t) for setting, t in SETTINGS.items()}
    spent = dict.fromkeys(apps, 0.0)
    try:
        for first in range(0, count, block):
            for setting, app in apps.items():
                started = time.perf_counter()
                for n in range(first, min(first + block, count)):
                    app.enqueue(None, TASK, {"n": n})
                spent[setting] += time.perf_counter() - started
    finally:
        for app in apps.values():
            app.close()
    return {setting: count / seconds for setting, seconds in spent.items()}


def prepared(url: str, repeats: int, enqueues: int) -> None:
    enqueue_name = f"enqueue(None) x {enqueues}"
    rates: dict[tuple[str, str], list[float]] = {}
    with fresh_schema(url) as schema:
        for _ in range(repeats):
            truncate(url, schema)
            for setting, rate in single_enqueues(url, schema, enqueues).items():
                rates.setdefault((enqueue_name, setting), []).append(rate)
    table = Table(title="server-side prepared statements on a direct connection")
    for column in ("workload", "setting", "jobs/s (median)", "range", "vs not prepared"):
        table.add_column(column, justify="left" if column in ("workload", "setting") else "right")
    for workload in (enqueue_name,):
        reference = statistics.median(rates[(workload, "not prepared")])
        for setting in SETTINGS:
            values = rates[(workload, setting)]
            median = statistics.median(values)
            table.add_row(
                workload,
                setting,
                f"{median:,.0f}",
                f"{min(values):,.0f}-{max(values):,.0f}",
                f"{median / reference:.2f}x",
            )
    console.print(table)
    console.print(f"{repeats} rounds; the settings alternate every 100 jobs")


# --- pickup ---------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(url: str) -> Iterator[str]:
    """A fresh database with pgjobs_bench.py's schema (`pgjobs`), dropped at the end."""
    name = f"pgjobs_pooler_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = psycopg.conninfo.make_conninfo(url, dbname=name)
    try:
        upgrade(database_url, "pgjobs")
        with psycopg.connect(database_url, autocommit=True) as conn:
            make_partitions(conn, "pgjobs", ahead="1 hour")
            conn.execute(
                sql.SQL(
                    "INSERT INTO pgjobs.jobs_history (id, task, payload, state, attempts,"
                    " started_at, finished_at) SELECT {}, %s, jsonb_build_object('n', g),"
                    " 'completed', 1, now(), now() FROM generate_series(1, 10000) g"
                ).format(next_id("pgjobs")),
                (TASK,),
            )
            vacuum(conn, "pgjobs")
        yield database_url
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def worker(main_url: str, listen_url: str | None, starts: Path, log: Path) -> Iterator[None]:
    command = [sys.executable, "-m", "pgjobs", "work", "--app", "pgjobs_bench:app"]
    command += ["--concurrency", "4", "--log-level", "WARNING", "--database-url", main_url]
    if listen_url:
        command += ["--listen-database-url", listen_url]
    env = {
        **os.environ,
        "PGJOBS_DATABASE_URL": main_url,
        "PYTHONPATH": str(PEERS),
        "BENCH_STARTS_FILE": str(starts),
    }
    env.pop("PGJOBS_LISTEN_DATABASE_URL", None)
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=PEERS, env=env, stdout=output, stderr=output)
    try:
        yield
    finally:
        process.terminate()
        process.wait(30)


def marks(path: Path) -> dict[int, float]:
    if not path.exists():
        return {}
    found: dict[int, float] = {}
    for line in path.read_text().splitlines():
        n, at = line.split()
        found.setdefault(int(n), float(at))
    return found


def wait_for(path: Path, wanted: set[int], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= set(marks(path)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs never started; worker log: {log.read_text()[-2000:]}")
        time.sleep(0.02)


def pickup_run(
    main_url: str, listen_url: str | None, jobs: int, gap: float, files: Path
) -> list[float]:
    """Commit-to-start latencies (ms) of `jobs` jobs produced on `main_url`."""
    starts = files / f"starts-{uuid.uuid4().hex[:8]}"
    log = files / f"worker-{uuid.uuid4().hex[:8]}.log"
    app = App(main_url, schema="pgjobs")
    commits: dict[int, float] = {}
    with (
        worker(main_url, listen_url, starts, log),
        psycopg.connect(main_url, prepare_threshold=None) as conn,
    ):
        app.enqueue(conn, TASK, {"n": 0})
        conn.commit()
        wait_for(starts, {0}, 60, log)
        time.sleep(3.0)  # the notification check's verdict, then an idle worker
        for n in range(1, jobs + 1):
            app.enqueue(conn, TASK, {"n": n})
            conn.commit()
            commits[n] = time.time()
            time.sleep(gap)
        wait_for(starts, set(commits), 60, log)
    app.close()
    started = marks(starts)
    return [(started[n] - at) * 1000 for n, at in commits.items()]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile, as compare.py computes it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def pickup(url: str, jobs: int, rounds: int) -> None:
    from tests.helpers.pgbouncer import running_pgbouncer

    with bench_database(url) as direct, running_pgbouncer(direct) as pooled:
        setups: dict[str, tuple[str, str | None]] = {
            "direct": (direct, None),
            "PgBouncer + --listen-database-url (direct)": (pooled, direct),
            "PgBouncer, no listen URL (fast poll)": (pooled, None),
        }
        latencies: dict[str, list[float]] = {name: [] for name in setups}
        with tempfile.TemporaryDirectory(prefix="pgjobs-pooler-bench-") as folder:
            for _ in range(rounds):
                for name, (main_url, listen_url) in setups.items():
                    latencies[name] += pickup_run(main_url, listen_url, jobs, 0.025, Path(folder))
    table = Table(title=f"idle pickup latency, {jobs} jobs x {rounds} rounds, 25 ms apart")
    for column in ("setup", "p50 ms", "p95 ms", "p99 ms", "p50 vs direct"):
        table.add_column(column, justify="left" if column == "setup" else "right")
    reference = percentile(latencies["direct"], 50)
    for name, values in latencies.items():
        p50, p95, p99 = (percentile(values, p) for p in (50, 95, 99))
        table.add_row(name, f"{p50:.1f}", f"{p95:.1f}", f"{p99:.1f}", f"{p50 / reference:.2f}x")
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepared", "pickup"])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--repeats", type=int, default=5, help="prepared: rounds")
    parser.add_argument("--enqueues", type=int, default=2000, help="prepared: single enqueues")
    parser.add_argument("--jobs", type=int, default=200, help="pickup: jobs per round")
    parser.add_argument("--rounds", type=int, default=2, help="pickup: rounds")
    args = parser.parse_args(argv)
    # Prepared statements save CPU per statement; with synchronous commits the disk's
    # sync would hide it, so the throwaway cluster of `prepared` commits asynchronously.
    options = {"synchronous_commit": "off"} if args.command == "prepared" else {}
    with server(args.database_url, options) as url:
        if args.command == "prepared":
            prepared(url, args.repeats, args.enqueues)
        else:
            pickup(url, args.jobs, args.rounds)


if __name__ == "__main__":
    main()
