"""Idle pickup: how long from a job's commit to its task's start, beside the floor
(issue 30, point 3).

    python bench/pickup.py [--database-url URL] [--jobs 300] [--rounds 3] [--gap 0.025]
                           [--systems floor,c4,default,async] [--history 10000]

The floor is what any PostgreSQL queue with durable claims must pay: the producer's
durable commit, one notification, and a durable claim, with the least Python. No pgjobs
code: the raw-SQL baseline's table (`bench/peers/raw_sql.py`: a partial index on waiting
rows and a statement-level NOTIFY trigger, as pgjobs' wake-up trigger is), and a
listener in a process of its own (this script with `--floor-listener`), one thread on
one autocommit connection (psycopg's defaults, so its claim is prepared after five
runs): blocked in `conn.notifies()`, on a notification it claims with the baseline's
statement for one row (`UPDATE ... WHERE id = ANY(ARRAY(SELECT ... LIMIT 1 FOR UPDATE
SKIP LOCKED)) RETURNING`, committed with `synchronous_commit` on) and records the time
it has the row back: the task's start. Then, off the clock, it completes the row. It
also claims after a second without notifications, so that no job waits for the next one.

pgjobs is a real `pgjobs work` process, idle, serving `bench/peers/pgjobs_bench.py`'s app
(its task appends its start to a file, no database round trip), with durable claims (the
default) and `--concurrency 4` (`c4`, compare.py's latency worker) or the defaults
(`default`, `--concurrency 10`); `async` is the defaults with `--async-claim-commit`.

Each run starts from the system's tables emptied and given `--history` finished jobs
(a queue in use, as compare.py's latency scenario has), VACUUM ANALYZE, CHECKPOINT; the
worker starts, a warm-up job proves it is up, and after a second of idleness the
producer (this process, the system's own `produce` of `bench/peers/`: one job per
transaction, through pgjobs' public API or a plain INSERT) commits `--jobs` jobs
`--gap` seconds apart, recording when each commit returned. Latency = task start -
commit return, both read with `time.time()` on this machine (CLOCK_REALTIME, one clock
for every process; the server's `now()` reads the same clock). Each round runs every
system once, in an order that rotates from round to round, so the machine's slow spells
fall on all of them alike; the percentiles pool the rounds.

Where the time goes: `started_at` of each row is its claim's `now()`, the start of the
claim's transaction (pgjobs' and the baseline's claims alike), read from the tables after
the run: commit -> claim start covers the notification's delivery and the worker waking
up to send its claim; claim start -> task start the claim's execution, its durable
commit, and the hand-over to the thread that runs the task. The floor's listener also
records when the notification reached it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from comparison.common.latency import percentile_or_nan as pct
from comparison.common.latency import read_marks
from harness import HERE, say, scalar, started_workers, stop
from history import busy_seconds
from pooler import bench_database
from psycopg import sql

sys.path.insert(0, str(HERE / "peers"))
import pgjobs_bench  # bench/peers: pgjobs as compare.py drives it
import raw_sql  # bench/peers: the raw-SQL baseline
from _common import STARTS_FILE_VARIABLE, StartMarks

STARTUP_TIMEOUT = 60.0  # seconds for a worker's warm-up job to start
LATE_TIMEOUT = 30.0  # seconds after the last commit for every job to have started
IDLE_BEFORE = 1.0  # seconds of idleness after the warm-up job, before the timed jobs
FLOOR_POLL = 1.0  # the floor's listener claims after this long without notifications
Popen = subprocess.Popen[bytes]
TARGETS = "p50 <= 2 ms, p99 <= 4 ms, within 1 ms of the floor"


@dataclass(frozen=True)
class System:
    """One row of the table: the floor (`options` None) or a pgjobs worker's options."""

    key: str
    label: str
    options: tuple[str, ...] | None

    @property
    def floor(self) -> bool:
        return self.options is None

    def jobs(self) -> sql.Identifier:
        """The table whose rows say when each job was claimed."""
        return sql.Identifier(raw_sql.TABLE) if self.floor else sql.Identifier("pgjobs", "jobs")


SYSTEMS = {
    s.key: s
    for s in (
        System("floor", "floor: psycopg, no pgjobs", None),
        System("c4", "pgjobs --concurrency 4", ("--concurrency", "4")),
        System("default", "pgjobs (defaults: --concurrency 10)", ()),
        System("async", "pgjobs --async-claim-commit", ("--async-claim-commit",)),
    )
}


@dataclass
class Run:
    """One system's jobs in one round: per job, epoch seconds of each moment."""

    system: System
    number: int
    commits: dict[int, float] = field(default_factory=dict)
    starts: dict[int, float] = field(default_factory=dict)
    claims: dict[int, float] = field(default_factory=dict)  # the rows' started_at
    notified: dict[int, float] = field(default_factory=dict)  # the floor's only
    busy: float = math.nan  # cores the whole machine kept busy meanwhile

    def gaps(self, later: dict[int, float], earlier: dict[int, float]) -> list[float]:
        """`later` - `earlier` in ms, for the jobs both know."""
        return [(later[n] - earlier[n]) * 1000 for n in self.commits if n in later and n in earlier]

    @property
    def latencies(self) -> list[float]:
        return self.gaps(self.starts, self.commits)

    @property
    def missing(self) -> int:
        return len(self.commits.keys() - self.starts.keys())


# --- the floor's listener (its own process) -----------------------------------------------


def floor_listener(url: str, notified_path: str) -> None:
    """The floor's worker, until SIGTERM: notification -> one durable claim -> started."""
    marks = StartMarks()
    notes = os.open(notified_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(raw_sql.CHANNEL)))
        while True:
            notified = math.nan
            for _ in conn.notifies(timeout=FLOOR_POLL, stop_after=1):
                notified = time.time()
                break  # the generator holds the connection: leave it to claim
            rows = conn.execute(raw_sql.CLAIM, {"batch": 1}).fetchall()
            for _, job_payload in rows:
                marks.mark(job_payload["n"])  # the task's start: the row is back
            if rows:
                conn.execute(raw_sql.COMPLETE, ([job_id for job_id, _ in rows],))
            if rows and not math.isnan(notified):  # not found by the poll
                lines = "".join(f"{p['n']} {notified:.6f}\n" for _, p in rows)
                os.write(notes, lines.encode())


@contextlib.contextmanager
def floor_running(url: str, starts: Path, notified: Path) -> Iterator[list[Popen]]:
    command = [sys.executable, __file__, "--database-url", url, "--floor-listener", str(notified)]
    env = dict(os.environ, **{STARTS_FILE_VARIABLE: str(starts)})
    process = subprocess.Popen(command, cwd=HERE, env=env, start_new_session=True)
    try:
        yield [process]
    finally:
        stop(process)


def worker_running(url: str, system: System, starts: Path) -> AbstractContextManager[list[Popen]]:
    """The system's worker: the floor's listener, or `pgjobs work` up and registered."""
    if system.options is None:
        return floor_running(url, starts, starts.with_suffix(".notified"))
    env = dict(os.environ, PYTHONPATH=str(HERE / "peers"), **{STARTS_FILE_VARIABLE: str(starts)})
    return started_workers(
        url, "pgjobs", 1, app="pgjobs_bench:app", options=system.options, env=env
    )


# --- one run ------------------------------------------------------------------------------


def prepare(url: str, system: System, history: int) -> int:
    """The system's tables emptied and given `history` finished jobs, analyzed, a
    checkpoint; the highest job id, after which the run's jobs come."""
    description = raw_sql.DESCRIPTION if system.floor else pgjobs_bench.DESCRIPTION
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(description["reset"])
        conn.execute(description["fill_finished"], {"count": history})
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return int(scalar(url, sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(system.jobs())))


def produce(url: str, system: System, count: int, gap: float, first: int) -> dict[int, float]:
    """`count` jobs `gap` seconds apart, one transaction each: {n: commit returned}."""
    module: Any = raw_sql if system.floor else pgjobs_bench
    return {int(n): float(at) for n, at in module.produce(url, count, 1 / gap, first, 1)}


def wait_started(starts: Path, wanted: set[int], workers: Sequence[Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= read_marks(starts).keys():
        if any(p.poll() is not None for p in workers):
            raise RuntimeError("the worker exited")
        if time.monotonic() > deadline:
            return  # the run counts them as missing
        time.sleep(0.02)


def claim_starts(url: str, system: System, after: int) -> dict[int, float]:
    """{n: started_at} of the run's jobs, from the rows."""
    query = sql.SQL(
        "SELECT (payload->>'n')::int, extract(epoch FROM started_at)::float8 FROM {}"
        " WHERE id > %s AND started_at IS NOT NULL"
    ).format(system.jobs())
    with psycopg.connect(url, autocommit=True) as conn:
        return {int(n): float(at) for n, at in conn.execute(query, [after])}


def measure(url: str, system: System, number: int, args: argparse.Namespace, files: Path) -> Run:
    run = Run(system, number)
    after = prepare(url, system, args.history)
    starts = files / f"starts-{system.key}-{number}"
    with worker_running(url, system, starts) as workers:
        produce(url, system, 1, args.gap, 0)  # the warm-up job, n = 0
        wait_started(starts, {0}, workers, STARTUP_TIMEOUT)
        if 0 not in read_marks(starts):
            raise RuntimeError(f"{system.label}: the warm-up job did not start")
        time.sleep(IDLE_BEFORE)
        began, busy = time.monotonic(), busy_seconds()
        run.commits = produce(url, system, args.jobs, args.gap, 1)
        wait_started(starts, set(run.commits), workers, LATE_TIMEOUT)
        run.busy = (busy_seconds() - busy) / (time.monotonic() - began)
    run.starts = read_marks(starts)
    run.claims = claim_starts(url, system, after)
    run.notified = read_marks(starts.with_suffix(".notified"))
    p50, p99 = pct(run.latencies, 50), pct(run.latencies, 99)
    say(f"  {system.label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, machine busy {run.busy:.2f}")
    return run


# --- the report ---------------------------------------------------------------------------


def pooled(runs: list[Run], read: Callable[[Run], list[float]]) -> list[float]:
    return [value for run in runs for value in read(run)]


def pair(values: list[float]) -> str:
    return f"{pct(values, 50):.2f} / {pct(values, 99):.2f}" if values else "-"


def latency_table(by_system: dict[System, list[Run]]) -> list[str]:
    lines = [
        "| system | jobs | p50 ms | p95 ms | p99 ms | max ms | p50 - floor | p99 - floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    floor = pooled(next((r for s, r in by_system.items() if s.floor), []), lambda r: r.latencies)
    for system, runs in by_system.items():
        values = pooled(runs, lambda r: r.latencies)
        missing = sum(run.missing for run in runs)
        jobs = f"{len(values):,}" + (f" ({missing} never started)" if missing else "")
        above = [
            f"{pct(values, p) - pct(floor, p):+.2f}" if floor and not system.floor else ""
            for p in (50, 99)
        ]
        figures = " | ".join(f"{pct(values, p):.2f}" for p in (50, 95, 99))
        lines.append(
            f"| {system.label} | {jobs} | {figures} | {max(values, default=math.nan):.2f} "
            f"| {above[0]} | {above[1]} |"
        )
    return lines


def breakdown_table(by_system: dict[System, list[Run]]) -> list[str]:
    lines = [
        "| system (p50 / p99 ms) | commit -> notified | notified -> task start "
        "| commit -> claim start | claim start -> task start |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for system, runs in by_system.items():
        parts = [
            pooled(runs, lambda r: r.gaps(r.notified, r.commits)),
            pooled(runs, lambda r: r.gaps(r.starts, r.notified)),
            pooled(runs, lambda r: r.gaps(r.claims, r.commits)),
            pooled(runs, lambda r: r.gaps(r.starts, r.claims)),
        ]
        lines.append(f"| {system.label} | " + " | ".join(pair(p) for p in parts) + " |")
    return lines


def rounds_table(runs: list[Run]) -> list[str]:
    lines = [
        "| round | system | p50 ms | p99 ms | machine busy (cores) |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for run in runs:
        lines.append(
            f"| {run.number} | {run.system.label} | {pct(run.latencies, 50):.2f} "
            f"| {pct(run.latencies, 99):.2f} | {run.busy:.2f} |"
        )
    return lines


def report(runs: list[Run], systems: list[System]) -> str:
    by_system = {s: [r for r in runs if r.system == s] for s in systems}
    return "\n".join(
        [
            *latency_table(by_system),
            "",
            *breakdown_table(by_system),
            "",
            *rounds_table(sorted(runs, key=lambda r: r.number)),
        ]
    )


# --- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=300, help="timed jobs per system and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.025, help="seconds between commits")
    parser.add_argument("--history", type=int, default=10_000, help="finished jobs kept")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"some of {', '.join(SYSTEMS)}"
    )
    parser.add_argument("--floor-listener", help=argparse.SUPPRESS)  # the floor's process
    return parser.parse_args()


def main() -> None:
    from pgjobs.embedded import temporary_cluster

    args = parse_args()
    if args.floor_listener:
        floor_listener(args.database_url, args.floor_listener)
        return
    systems = [SYSTEMS[key.strip()] for key in args.systems.split(",")]
    began = time.monotonic()
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        server = args.database_url or stack.enter_context(temporary_cluster())
        url = stack.enter_context(bench_database(server))  # pgjobs' schema in it
        raw_sql.install(url)
        files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgjobs-pickup-")))
        for number in range(1, args.rounds + 1):
            shift = (number - 1) % len(systems)
            say(f"round {number}")
            for system in systems[shift:] + systems[:shift]:
                runs.append(measure(url, system, number, args, files))
        version = scalar(url, "SHOW server_version")
        durable = scalar(url, "SHOW synchronous_commit"), scalar(url, "SHOW fsync")
    rounds = f"{args.rounds} round" + "s" * (args.rounds != 1)
    print(
        f"pgjobs idle pickup beside the floor: {args.jobs:,} jobs per system and round, "
        f"{args.gap * 1000:g} ms apart, {rounds}, {args.history:,} finished jobs in the "
        f"tables; PostgreSQL {version} (synchronous_commit {durable[0]}, fsync {durable[1]}), "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {time.monotonic() - began:.0f} s "
        f"in all. Targets: {TARGETS}.\n"
    )
    print(report(runs, systems))


if __name__ == "__main__":
    main()
