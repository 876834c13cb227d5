"""Side-by-side benchmark: pgjobs, procrastinate, pgqueuer and a raw-SQL baseline.

    python bench/compare.py             # full run, about 15 minutes on 2 cores
    python bench/compare.py --quick     # smaller counts, 1-2 minutes
    python bench/compare.py --json results.json --scenarios drain,latency --systems pgjobs,raw

Everything it needs it sets up itself: a throwaway PostgreSQL cluster from
`pgjobs.embedded.temporary_cluster()` (the bundled server of `pgjobs[embedded]`, else the
machine's binaries; Unix socket only, deleted at the end) with one database per system, and
a virtualenv `bench/.peers-venv` with the peers (`procrastinate`, `pgqueuer[asyncpg]`, and
psycopg pinned to pgjobs' version) from the package index, kept apart from pgjobs'
dependencies and reused while its requirements are unchanged.

Each system is driven by one script in `bench/peers/` that knows everything about it
(schema install, its own enqueue API, its own claim, which tables record a job's start and
end); the peers' scripts and workers run with the peers' python. Every worker is a
subprocess started through the system's own CLI (`pgjobs work`, `procrastinate worker`,
`pgq run`; the baseline's `raw_sql.py work`), with logging at WARNING for all.

`pgjobs-async` is pgjobs' worker with `--async-claim-commit` added to every setting (claims
commit without waiting for the disk), a row of its own in the drain, latency and steady
scenarios beside the durable default; it is not a peer (see `VARIANTS`).

How each scenario is measured, the same way for every system:

- bulk enqueue: one call of the system's bulk API (pgjobs `enqueue_many`, procrastinate
  `batch_defer_async`, pgqueuer `Queries.enqueue` with lists, baseline COPY) and its
  commit, timed inside the producer process; jobs/s.
- single enqueue: one job per call and per transaction (`task.enqueue` + commit,
  `defer_async`, `Queries.enqueue`, INSERT + COMMIT); jobs/s, the median of five rounds
  (each commit waits for the disk, so one round swings with the machine's other work).
- drain: no-op jobs are enqueued (untimed), then a worker is started; the time runs from
  the first claim to the last recorded outcome, both read from the system's own tables
  afterwards (pgjobs `started_at`/`finished_at`, procrastinate's `procrastinate_events`,
  pgqueuer's `pgqueuer_log`), so interpreter start-up is left out. Each system runs with
  each of its settings in `WORKER_ARGS["drain"]`, three rounds each (procrastinate one:
  its drain takes half a minute); a setting's figure is the median of its rounds, the
  system's the best setting's, so every ratio takes each system at its best; every
  setting's rounds are in a table under the report. A setting with `--processes N` starts
  N worker processes at once (the way pgqueuer scales out; pgjobs and the baseline get it
  too), timed the same way: from the first claim of any to the last outcome of any.
- async drain: the same, with `async def` no-op tasks: pgjobs' worker serves
  `pgjobs_bench:async_app` (the same task name, declared `async def`, run on the worker's
  event loop beside its threads); pgqueuer's tasks are `async def` anyway, so its row is
  its drain again, measured in the same run. Only systems with `WORKER_ARGS["drain_async"]`
  take part.
- single enqueue and the drains are taken in rounds: every system has its turn in each
  round, in an order that rotates, so that a slow spell of the machine (20,000 jobs drain
  in under half a second) falls on all systems alike rather than on one system's rounds.
- idle pickup latency (one worker process, as in the scenarios below): an idle worker gets
  jobs one at a time, spaced out; the producer records the wall-clock time its commit
  returned, the task the time it began (appended to a file, no database round trip);
  latency = start - commit; p50/p95/p99. The tables hold 10,000 finished jobs first,
  analyzed, as a queue in use does (see `latencies`).
- steady state: a producer enqueues one job per transaction at a fixed rate on a fixed
  schedule, dealt to 8 connections in turn; latency as above. It keeps up when every job
  started within 30 s of the last commit and p99 < 1 s; the rate offered is noted.
- claim cost: the median time of one claim through the system's own claim code (batch of
  10; procrastinate claims one job per call) with 10k waiting, with 1M waiting, and with
  1M finished + 10k waiting, tables filled with INSERT ... SELECT generate_series (triggers
  off) and then VACUUM ANALYZE'd. pgqueuer deletes finished jobs from its queue table;
  its finished rows are its log entries.
- worker memory: the worker's resident set (with any child processes) read from /proc
  when 10% and when all of the jobs enqueued before it started have finished (or when a
  time cap ends the run, which the note then says).

Before every timed run the tables are emptied, VACUUM ANALYZE'd and CHECKPOINTed.
Scenarios run one after the other, each for every system in turn. Ratios are a system's
figure divided by the best peer's, and by the baseline's; the arrow in the metric says
whether higher or lower is better. On a small shared machine absolute figures are noisy:
compare ratios, and runs with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from pgjobs.embedded import temporary_cluster

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "bench" / "peers"
PEERS_VENV = REPO / "bench" / ".peers-venv"
PEER_REQUIREMENTS = (
    "procrastinate==3.10.0",
    "pgqueuer[asyncpg]==1.6.0",
    # The same driver, with its C speed-ups, as pgjobs runs on.
    f"psycopg[binary]=={version('psycopg')}",
)
# What each system's worker is started with, per scenario; edit here. "drain" lists every
# setting tried (the best is reported, all are noted); the other scenarios use one each.
# A setting with an option the worker's `--help` does not list is skipped (pgjobs' worker
# options come and go as it is developed). PROCESSES is compare.py's own: the drain starts
# that many worker processes with the rest of the setting (see `running_workers`).
PROCESSES = "--processes"
WORKER_ARGS: dict[str, dict[str, list[list[str]]]] = {
    "pgjobs": {
        "drain": [
            ["--concurrency", "4"],
            ["--concurrency", "10"],
            ["--concurrency", "32"],
            # --prefetch only bounds the claim buffer now; its time window is what sizes it.
            ["--concurrency", "10", "--claim-window", "1"],
            [PROCESSES, "2", "--concurrency", "10"],
        ],
        # The last --app wins: the App whose `bench.job` is an `async def`.
        "drain_async": [
            ["--app", "pgjobs_bench:async_app"],
            ["--app", "pgjobs_bench:async_app", "--async-concurrency", "500"],
            [
                *("--app", "pgjobs_bench:async_app"),
                *("--async-concurrency", "500", "--claim-window", "1"),
            ],
        ],
        "latency": [["--concurrency", "4"]],
        "steady": [["--concurrency", "10"]],
        "memory": [["--concurrency", "10"]],
    },
    "procrastinate": {
        # Its fetch loop claims one job per transaction whatever the concurrency, and it
        # is the slowest to drain here: two settings keep the full run near 15 minutes.
        "drain": [["--concurrency", "4"], ["--concurrency", "16"]],
        "latency": [["--concurrency", "4"]],
        "steady": [["--concurrency", "10"]],
        "memory": [["--concurrency", "10"]],
    },
    "pgqueuer": {
        # More processes is pgqueuer's documented way to scale out (one event loop each).
        "drain": [
            ["--batch", "10"],
            ["--batch", "50"],
            ["--batch", "200"],
            [PROCESSES, "2", "--batch", "50"],
            [PROCESSES, "2", "--batch", "200"],
        ],
        "drain_async": [["--batch", "10"], ["--batch", "50"], ["--batch", "200"]],
        "latency": [["--batch", "10"]],
        "steady": [["--batch", "10"]],
        "memory": [["--batch", "10"]],
    },
    "raw": {
        # Enough settings that the baseline is at its best on 2 cores, so that no ratio to
        # it flatters a system.
        "drain": [
            ["--threads", "2", "--batch", "50"],
            ["--threads", "4", "--batch", "50"],
            ["--threads", "8", "--batch", "50"],
            ["--threads", "2", "--batch", "200"],
            ["--threads", "4", "--batch", "200"],
            ["--threads", "8", "--batch", "200"],
            [PROCESSES, "2", "--threads", "4", "--batch", "50"],
            [PROCESSES, "2", "--threads", "2", "--batch", "200"],
        ],
        "latency": [["--threads", "4", "--batch", "50"]],
        "steady": [["--threads", "4", "--batch", "50"]],
        "memory": [["--threads", "4", "--batch", "50"]],
    },
}


@dataclass(frozen=True)
class Variant:
    """A system's worker with options appended to all of its settings, shown as a system
    of its own in the scenarios those options bear on. It is not a peer: no `vs best peer`
    is taken against it."""

    base: str
    options: tuple[str, ...]
    scenarios: tuple[str, ...]

    def worker_args(self) -> dict[str, list[list[str]]]:
        base = WORKER_ARGS[self.base]
        return {s: [[*args, *self.options] for args in base[s]] for s in self.scenarios}


# pgjobs' worker commits its claims durably by default; with --async-claim-commit a claim
# does not wait for the disk (faster pickup; a server crash may undo a claim). Both rows.
VARIANTS = {
    "pgjobs-async": Variant("pgjobs", ("--async-claim-commit",), ("drain", "latency", "steady")),
}
WORKER_ARGS |= {name: variant.worker_args() for name, variant in VARIANTS.items()}
# Jobs per claim in the claim-cost scenario (procrastinate can only claim one).
CLAIM_BATCH = {"pgjobs": 10, "procrastinate": 1, "pgqueuer": 10, "raw": 10}
# Connections the steady-state producer deals its jobs to, one transaction per job each, so
# that reaching the rate does not depend on one connection's commit latency.
STEADY_PRODUCER_LANES = 8
# A drain of procrastinate takes about 30 s (it claims one job per transaction), and its
# figure is in no target's ratio (pgqueuer is the faster peer): one round of it is enough.
DRAIN_ROUNDS_CAP = {"procrastinate": 1}
KEEPS_UP_P99_MS = 1000.0
POLL = 0.25  # seconds between looks at the tables; the timings come from the rows
MARKS_POLL = 0.02
STALL_TIMEOUT = 60.0  # a drain with no job finished for this long has failed
DRAIN_TIMEOUT = 600.0
STARTUP_TIMEOUT = 60.0
LATE_TIMEOUT = 30.0  # how long after the producer finished a job may still start
DRIVER_TIMEOUT = 900.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Counts:
    """The sizes of a run; `--quick` uses smaller ones."""

    bulk: int  # jobs in the one bulk call
    single: int  # jobs enqueued one transaction each...
    single_rounds: int  # ...this many times; the median is the figure
    drain: int  # no-op jobs per drain run...
    drain_rounds: int  # ...of each setting, this many times; the median is its figure
    latency_jobs: int  # jobs of the idle-latency run...
    latency_rate: float  # ...at this many per second
    steady_rate: float  # jobs per second of the steady state...
    steady_seconds: float  # ...for this long
    history: int  # finished jobs in the tables before a latency run
    claim_small: int  # waiting jobs of the small claim-cost table
    claim_big: int  # waiting, then finished, jobs of the big one
    claims: int  # claims timed per table...
    claim_budget: float  # ...or as many as fit in this many seconds
    memory: int  # jobs drained by the memory run...
    memory_early: int  # ...with the first sample after this many
    memory_seconds: float  # time cap of the memory run


FULL = Counts(
    bulk=100_000,
    single=2_000,
    single_rounds=5,
    drain=20_000,
    drain_rounds=3,
    latency_jobs=200,
    latency_rate=40,
    steady_rate=500,
    steady_seconds=20,
    history=10_000,
    claim_small=10_000,
    claim_big=1_000_000,
    claims=200,
    claim_budget=20,
    memory=100_000,
    memory_early=10_000,
    memory_seconds=150,
)
QUICK = Counts(
    bulk=10_000,
    single=200,
    single_rounds=3,
    drain=1_000,
    drain_rounds=1,
    latency_jobs=30,
    latency_rate=40,
    steady_rate=500,
    steady_seconds=2,
    history=10_000,
    claim_small=10_000,
    claim_big=50_000,
    claims=20,
    claim_budget=2,
    memory=3_000,
    memory_early=300,
    memory_seconds=10,
)


@dataclass(frozen=True)
class System:
    """One system under test: which python runs its script, and how its worker starts."""

    name: str
    peer: bool
    python: Path
    script: str
    worker: tuple[str, ...]
    # The scenarios it takes part in; None: every one.
    scenarios: frozenset[str] | None = None
    # The system it is a Variant of (the same code, other worker options), if any.
    variant_of: str = ""

    def takes_part(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios


@dataclass
class Target:
    """A system with its own database in the cluster, and what its script told about it."""

    system: System
    url: str
    admin: psycopg.Connection[Any]
    sql: dict[str, str]
    version: str


@dataclass
class Result:
    """One figure of one system in one scenario."""

    scenario: str
    metric: str
    system: str
    value: float | None
    higher_is_better: bool
    note: str = ""
    error: str = ""


@dataclass
class Settings:
    """What was run, for the report: worker arguments per scenario, drain winners, and
    every drain setting's rounds (scenario -> system -> setting -> jobs/s per round)."""

    used: dict[str, dict[str, str]] = field(default_factory=dict)
    drains: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)

    def record(self, system: str, scenario: str, value: str) -> None:
        self.used.setdefault(system, {})[scenario] = value


def say(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# -- setting up ----------------------------------------------------------------------------


def peers_python() -> Path:
    """The peers' virtualenv, created or updated when its requirements changed."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / "bench-requirements.txt"
    wanted = "\n".join(PEER_REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"installing the peers into {PEERS_VENV.relative_to(REPO)} (once)...")
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    install = [str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS]
    finished = subprocess.run(install, capture_output=True, text=True, timeout=DRIVER_TIMEOUT)
    if finished.returncode != 0:
        raise RuntimeError(f"pip could not install the peers:\n{finished.stderr[-3000:]}")
    stamp.write_text(wanted)
    return python


def systems(peers: Path) -> list[System]:
    """Every system, each Variant right after the system it varies."""
    listed: list[System] = []
    for system in own_systems(peers):
        listed.append(system)
        for name, variant in VARIANTS.items():
            if variant.base == system.name:
                scenarios = frozenset(variant.scenarios)
                listed.append(
                    replace(system, name=name, scenarios=scenarios, variant_of=variant.base)
                )
    return listed


def own_systems(peers: Path) -> list[System]:
    main = Path(sys.executable)
    return [
        System(
            "pgjobs",
            False,
            main,
            "pgjobs_bench.py",
            (
                str(main),
                "-m",
                "pgjobs",
                "work",
                "--app",
                "pgjobs_bench:app",
                "--log-level",
                "WARNING",
            ),
        ),
        System(
            "procrastinate",
            True,
            peers,
            "procrastinate_bench.py",
            (
                str(peers),
                "-m",
                "procrastinate",
                "--app=procrastinate_bench.app",
                "--log-level=warning",
                "worker",
            ),
        ),
        System(
            "pgqueuer",
            True,
            peers,
            "pgqueuer_bench.py",
            (str(peers), "pgqueuer_bench.py", "work"),
        ),
        System("raw", False, main, "raw_sql.py", (str(main), "raw_sql.py", "work")),
    ]


def database_url(cluster_url: str, database: str) -> str:
    """The cluster's URL pointing at another database (asyncpg needs the URL form)."""
    parts = urlsplit(cluster_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def child_env(url: str, starts: Path | None = None) -> dict[str, str]:
    """The environment of every subprocess: the system's database, the peers folder on the
    path (workers import their app from it), and where task starts go, if anywhere."""
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": url,
        "PGJOBS_DATABASE_URL": url,
        "PYTHONPATH": str(PEERS),
    }
    env.pop("BENCH_STARTS_FILE", None)
    if starts is not None:
        env["BENCH_STARTS_FILE"] = str(starts)
    return env


def drive(target: Target, command: str, *args: str) -> dict[str, Any]:
    """Run one command of the system's script and return the JSON it printed."""
    system = target.system
    finished = subprocess.run(
        [str(system.python), str(PEERS / system.script), command, "--url", target.url, *args],
        cwd=PEERS,
        env=child_env(target.url),
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT,
        start_new_session=True,
    )
    if finished.returncode != 0:
        raise RuntimeError(
            f"{system.script} {command} failed: {last_line(finished.stderr)}\n"
            f"{finished.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def last_line(output: str) -> str:
    """The line of a failed program's output that usually says why: its last."""
    lines = output.strip().splitlines()
    return lines[-1] if lines else "no output"


def describe(system: System) -> dict[str, Any]:
    finished = subprocess.run(
        [str(system.python), str(PEERS / system.script), "describe"],
        cwd=PEERS,
        env=child_env(""),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


def prepare(cluster_url: str, system: System) -> Target:
    """A fresh database for the system, with the system's own schema installed in it."""
    database = "bench_" + system.name.replace("-", "_")
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")
    url = database_url(cluster_url, database)
    description = describe(system)
    admin = psycopg.connect(url, autocommit=True)
    target = Target(system, url, admin, description["sql"], description["version"])
    try:
        drive(target, "install")
    except BaseException:
        admin.close()
        raise
    return target


def worker_options(system: System) -> frozenset[str] | None:
    """The options the system's worker lists in its `--help` (pgjobs' come and go as it is
    developed), or None, and no setting is skipped, if it would not say."""
    finished = subprocess.run(
        [*system.worker, "--help"],
        cwd=PEERS,
        env=child_env(""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if finished.returncode != 0:
        say(f"  {system.name}: its worker's --help failed; every setting is tried")
        return None
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", finished.stdout))


def setting_options(args: Sequence[str]) -> set[str]:
    """The options a setting passes to the worker (`--name` or `--name=value`)."""
    return {arg.partition("=")[0] for arg in args if arg.startswith("--")}


def processes_of(setting: Sequence[str]) -> tuple[int, list[str]]:
    """How many worker processes a setting asks for (PROCESSES, else one), and the rest of
    its arguments, which every process is started with."""
    args = list(setting)
    if PROCESSES not in args:
        return 1, args
    at = args.index(PROCESSES)
    count = int(args[at + 1])
    del args[at : at + 2]
    return count, args


# -- observing the tables -----------------------------------------------------------------


def scalar(target: Target, query: str, params: dict[str, Any] | None = None) -> Any:
    row = target.admin.execute(query, params).fetchone()
    return row[0] if row else None


def reset(target: Target) -> None:
    target.admin.execute(target.sql["reset"])


def settle(target: Target) -> None:
    """Fresh statistics and a checkpoint, so a run starts without inherited debt."""
    target.admin.execute("VACUUM ANALYZE")
    target.admin.execute("CHECKPOINT")


def fill_directly(target: Target, waiting: int, finished: int = 0) -> None:
    """Fill the tables in SQL, with triggers off (no NOTIFY storms, no event rows)."""
    with target.admin.transaction():
        target.admin.execute("SET LOCAL session_replication_role = replica")
        if finished:
            target.admin.execute(target.sql["fill_finished"], {"count": finished})
        if waiting:
            target.admin.execute(target.sql["fill_waiting"], {"count": waiting})


def window(target: Target, expected: int) -> float:
    """Seconds from the first claim to the last recorded outcome, from the tables."""
    row = target.admin.execute(target.sql["window"]).fetchone()
    if row is None or row[0] is None or row[1] is None:
        raise RuntimeError("no finished job recorded")
    first, last, count = row
    if count != expected:
        raise RuntimeError(f"{count} of {expected} jobs recorded as finished")
    return float(last) - float(first)


# -- workers --------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A worker under test, its log, and its memory as /proc tells it."""

    process: subprocess.Popen[bytes]
    log: Path
    label: str

    def check_alive(self) -> None:
        """Fail with the worker's output if it exited early."""
        if self.process.poll() is None:
            return
        output = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{self.label} exited with {self.process.returncode}: {last_line(output)}\n{output}"
        )

    def rss_bytes(self) -> int:
        """Resident memory of the worker and every process it started."""
        return sum(status_kb(pid, "VmRSS") for pid in process_tree(self.process.pid)) * 1024

    def peak_bytes(self) -> int:
        return status_kb(self.process.pid, "VmHWM") * 1024


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                pids += process_tree(int(child))
    return pids


def status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


@dataclass
class Workers:
    """The processes of one worker setting, started and stopped together."""

    processes: list[WorkerProcess]
    label: str

    def check_alive(self) -> None:
        for worker in self.processes:
            worker.check_alive()


@contextlib.contextmanager
def running_workers(
    target: Target, setting: Sequence[str], logs: Path, starts: Path | None = None
) -> Iterator[Workers]:
    """The setting's worker processes (PROCESSES of them, else one), all started at once
    with the rest of the setting; SIGTERM (a graceful stop) to all when done. Nothing
    coordinates them but the database, as when a user starts several."""
    count, args = processes_of(setting)
    label = f"{target.system.name} worker {' '.join(setting)}"
    workers: list[WorkerProcess] = []
    try:
        for number in range(1, count + 1):
            suffix = f" (process {number} of {count})" if count > 1 else ""
            workers.append(start_worker(target, args, logs, starts, label + suffix))
        yield Workers(workers, label)
    finally:
        stop([worker.process for worker in workers])


@contextlib.contextmanager
def running_worker(
    target: Target, args: Sequence[str], logs: Path, starts: Path | None = None
) -> Iterator[WorkerProcess]:
    """The system's worker as one subprocess, for the scenarios that measure one."""
    with running_workers(target, args, logs, starts) as workers:
        (worker,) = workers.processes
        yield worker


def start_worker(
    target: Target, args: Sequence[str], logs: Path, starts: Path | None, label: str
) -> WorkerProcess:
    log = logs / f"{target.system.name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [*target.system.worker, *args],
            cwd=PEERS,
            env=child_env(target.url, starts),
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C reaches only compare.py, which stops workers in turn.
            start_new_session=True,
        )
    return WorkerProcess(process, log, label)


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process first, so that several stop in the time of one."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_drained(
    target: Target,
    worker: WorkerProcess | Workers,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Until no job is waiting or running, or for `timeout` seconds; returns how many are
    left. Fails if the worker dies or finishes nothing for STALL_TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    last_unfinished, last_change = -1, time.monotonic()
    while True:
        unfinished = int(scalar(target, target.sql["unfinished"]))
        if on_progress is not None:
            on_progress(unfinished)
        if unfinished == 0 or time.monotonic() > deadline:
            return unfinished
        worker.check_alive()
        if unfinished != last_unfinished:
            last_unfinished, last_change = unfinished, time.monotonic()
        elif time.monotonic() - last_change > STALL_TIMEOUT:
            raise RuntimeError(f"{worker.label}: no job finished in {STALL_TIMEOUT:g}s")
        time.sleep(POLL)


def read_marks(path: Path) -> dict[int, float]:
    """Task starts recorded by the workers: sequence number -> wall-clock time."""
    if not path.exists():
        return {}
    marks: dict[int, float] = {}
    for line in path.read_text().splitlines():
        n, at = line.split()
        marks.setdefault(int(n), float(at))
    return marks


def wait_marks(path: Path, wanted: set[int], worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= read_marks(path).keys():
        worker.check_alive()
        if time.monotonic() > deadline:
            missing = len(wanted - read_marks(path).keys())
            raise TimeoutError(f"{worker.label}: {missing} jobs not started after {timeout:g}s")
        time.sleep(MARKS_POLL)


# -- scenarios ------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a scenario needs: the sizes, where files go, and what to report."""

    counts: Counts
    files: Path
    settings: Settings
    # Per system, the options its worker offers (None: unknown, every setting is tried).
    offered: dict[str, frozenset[str] | None]

    def title(self, scenario: str) -> str:
        """The scenario as the report names it, with this run's counts."""
        c = self.counts
        return {
            "bulk": f"bulk enqueue {c.bulk:,}",
            "single": f"single enqueue {c.single:,}, 1 txn each",
            "drain": f"drain {c.drain:,} no-op jobs",
            "drain_async": f"drain {c.drain:,} no-op async def jobs",
            "latency": f"idle pickup latency, {c.latency_jobs} jobs",
            "steady": f"steady {c.steady_rate:,.0f} jobs/s for {c.steady_seconds:g} s",
            "claim": "claim cost (one claim)",
            "memory": f"worker RSS over {c.memory:,} jobs",
        }[scenario]

    def worker_args(self, system: str, scenario: str) -> list[list[str]]:
        """The system's settings for the scenario, less those its worker cannot take."""
        usable, skipped = [], []
        offered = self.offered.get(system)
        for args in WORKER_ARGS[system][scenario]:
            missing = sorted(setting_options(processes_of(args)[1]) - (offered or set()))
            if offered is None or not missing:
                usable.append(args)
            else:
                skipped.append(f"{' '.join(args)} ({', '.join(missing)} not offered)")
        if skipped:
            self.settings.record(system, f"{scenario} (skipped)", "; ".join(skipped))
        for args in usable:
            if not scenario.startswith("drain"):
                self.settings.record(system, scenario, " ".join(args))
        return usable


def bulk_enqueue(run: Run, target: Target) -> list[Result]:
    count = run.counts.bulk
    reset(target)
    settle(target)
    seconds = float(drive(target, "bulk", "--count", str(count))["seconds"])
    scenario = run.title("bulk")
    return [Result(scenario, "jobs/s ↑", target.system.name, count / seconds, True)]


def single_round(run: Run, target: Target) -> dict[str, float]:
    reset(target)
    settle(target)
    seconds = float(drive(target, "single", "--count", str(run.counts.single))["seconds"])
    return {"": run.counts.single / seconds}


def single_summary(run: Run, system: str, rates: dict[str, list[float]]) -> Result:
    rounds = rates[""]
    note = "rounds: " + ", ".join(f"{rate:,.0f}" for rate in rounds)
    return Result(run.title("single"), "jobs/s ↑", system, statistics.median(rounds), True, note)


def drain_round(run: Run, target: Target, scenario: str = "drain") -> dict[str, float]:
    """One drain of each setting of the system (none if it has none for `scenario`). With
    several processes the window still runs from the first claim of any of them to the last
    outcome of any, as the tables record them."""
    if scenario not in WORKER_ARGS[target.system.name]:
        return {}
    count = run.counts.drain
    rates: dict[str, float] = {}
    for args in run.worker_args(target.system.name, scenario):
        reset(target)
        drive(target, "bulk", "--count", str(count))
        settle(target)
        with running_workers(target, args, run.files) as workers:
            left = wait_drained(target, workers, DRAIN_TIMEOUT)
        if left:
            raise RuntimeError(f"{left:,} of {count:,} jobs left after {DRAIN_TIMEOUT:g}s")
        setting = " ".join(args)
        rates[setting] = count / window(target, count)
        say(f"  {scenario} {target.system.name} {setting}: {rates[setting]:,.0f} jobs/s")
    return rates


def drain_summary(
    run: Run, system: str, rates: dict[str, list[float]], scenario: str = "drain"
) -> Result:
    """The best setting by its median round is the system's figure, so every ratio takes
    each system at its best; every setting's rounds go to the table under the report."""
    medians = {setting: statistics.median(rounds) for setting, rounds in rates.items()}
    best = max(medians, key=lambda setting: medians[setting])
    run.settings.record(system, f"{scenario} (best)", best)
    run.settings.drains.setdefault(run.title(scenario), {})[system] = rates
    note = f"best of {len(rates)} settings: {best}" if len(rates) > 1 else best
    return Result(run.title(scenario), "jobs/s ↑", system, medians[best], True, note)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latencies(
    run: Run, target: Target, scenario: str, count: int, rate: float, lanes: int
) -> tuple[list[float], int, float]:
    """Commit-to-start latencies (ms) of `count` jobs produced at `rate` to a running worker.

    The tables first get a history of finished jobs, as a queue in use has, so that every
    planner sees a table in use: on a freshly analyzed empty table a plan cached while the
    table is tiny (procrastinate's fetch function) stays a sequential scan as it grows. A
    warm-up job then proves the worker is up and listening; it is not counted. Returns the
    latencies of the jobs that started, how many did not, and the rate the producer offered.
    """
    reset(target)
    fill_directly(target, waiting=0, finished=run.counts.history)
    settle(target)
    starts = run.files / f"starts-{target.system.name}-{time.monotonic_ns()}"
    commits_file = run.files / f"commits-{target.system.name}-{time.monotonic_ns()}.json"
    (args,) = run.worker_args(target.system.name, scenario)
    with running_worker(target, args, run.files, starts) as worker:
        drive(
            target, "produce", "--count", "1", "--rate", "1", "--first", "0", "--out", "/dev/null"
        )
        wait_marks(starts, {0}, worker, STARTUP_TIMEOUT)
        time.sleep(0.5)
        drive(
            target,
            "produce",
            *("--count", str(count), "--rate", str(rate), "--first", "1", "--lanes", str(lanes)),
            *("--out", str(commits_file)),
        )
        commits = {int(n): float(at) for n, at in json.loads(commits_file.read_text())}
        with contextlib.suppress(TimeoutError):
            wait_marks(starts, set(commits), worker, LATE_TIMEOUT)
    started = read_marks(starts)
    values = [(started[n] - at) * 1000 for n, at in commits.items() if n in started]
    times = sorted(commits.values())
    produced = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return values, len(commits) - len(values), produced


def idle_latency(run: Run, target: Target) -> list[Result]:
    counts = run.counts
    values, missing, _ = latencies(
        run, target, "latency", counts.latency_jobs, counts.latency_rate, lanes=1
    )
    if missing:
        raise RuntimeError(f"{missing} of {counts.latency_jobs} jobs never started")
    scenario = run.title("latency")
    name = target.system.name
    return [
        Result(scenario, f"p{p} ms ↓", name, percentile(values, p), False) for p in (50, 95, 99)
    ]


def steady_state(run: Run, target: Target) -> list[Result]:
    counts = run.counts
    count = int(counts.steady_rate * counts.steady_seconds)
    values, missing, produced = latencies(
        run, target, "steady", count, counts.steady_rate, STEADY_PRODUCER_LANES
    )
    p50, p99 = percentile(values, 50), percentile(values, 99)
    keeps_up = not missing and p99 < KEEPS_UP_P99_MS
    verdict = "keeps up" if keeps_up else "falls behind"
    if missing:
        verdict += (
            f" ({missing:,} not started {LATE_TIMEOUT:g}s after the last; figures of the rest)"
        )
    note = f"{verdict}; offered {produced:,.0f} jobs/s"
    scenario = run.title("steady")
    name = target.system.name
    return [
        Result(scenario, "p50 ms ↓", name, p50, False, note),
        Result(scenario, "p99 ms ↓", name, p99, False, note),
    ]


def claim_cost(run: Run, target: Target) -> list[Result]:
    counts = run.counts
    small, big = counts.claim_small, counts.claim_big
    states = {
        f"{small:,} waiting": (small, 0),
        f"{big:,} waiting": (big, 0),
        f"{big:,} finished + {small:,} waiting": (small, big),
    }
    batch = CLAIM_BATCH[target.system.name]
    medians: dict[str, float] = {}
    for state, (waiting, finished) in states.items():
        reset(target)
        fill_directly(target, waiting, finished)
        settle(target)
        timings = drive(
            target,
            "claim",
            *("--count", str(counts.claims), "--batch", str(batch)),
            *("--budget", str(counts.claim_budget)),
        )
        medians[state] = statistics.median(timings["ms"])
    run.settings.record(target.system.name, "claim", f"batch {batch}, {counts.claims} claims")
    first = next(iter(medians.values()))
    return [
        Result(
            run.title("claim"),
            f"ms, {state} ↓",
            target.system.name,
            median,
            False,
            f"x{median / first:.2f} of {small:,} waiting" if n else f"batch {batch}",
        )
        for n, (state, median) in enumerate(medians.items())
    ]


def worker_memory(run: Run, target: Target) -> list[Result]:
    """RSS after the first jobs and after all of them, unless the time cap came first."""
    counts = run.counts
    total, early, cap = counts.memory, counts.memory_early, counts.memory_seconds
    reset(target)
    drive(target, "bulk", "--count", str(total))
    settle(target)
    samples: dict[str, int] = {}
    (args,) = run.worker_args(target.system.name, "memory")
    with running_worker(target, args, run.files) as worker:

        def sample(unfinished: int) -> None:
            if total - unfinished >= early and "early" not in samples:
                samples["early"] = worker.rss_bytes()

        done = total - wait_drained(target, worker, cap, sample)
        samples["end"] = worker.rss_bytes()
        peak = worker.peak_bytes()
    if "early" not in samples:
        raise RuntimeError(f"only {done:,} jobs done in the {cap:g}s cap")
    mb = 1024 * 1024
    growth = (samples["end"] - samples["early"]) / mb
    note = f"{growth:+.1f} MB from {early:,} to {done:,}; peak {peak / mb:.1f} MB"
    if done < total:
        note = f"time cap: {done:,} of {total:,} done in {cap:g}s; " + note
    scenario = run.title("memory")
    name = target.system.name
    return [
        Result(scenario, f"MB after {early:,} ↓", name, samples["early"] / mb, False),
        Result(scenario, f"MB after {total:,} ↓", name, samples["end"] / mb, False, note),
    ]


SCENARIOS: dict[str, Callable[[Run, Target], list[Result]]] = {
    "bulk": bulk_enqueue,
    "latency": idle_latency,
    "steady": steady_state,
    "claim": claim_cost,
    "memory": worker_memory,
}


@dataclass(frozen=True)
class InRounds:
    """A scenario measured in rounds: in each, every system has its turn, in an order that
    rotates from round to round, so that a slow or quick spell of the machine falls on all
    of them alike instead of on whichever ran its rounds then. `measure` gives one round's
    rate per setting, `summary` turns each setting's rates into the system's figure;
    `rounds_cap` holds the systems that take part in fewer rounds, and in how many."""

    measure: Callable[[Run, Target], dict[str, float]]
    summary: Callable[[Run, str, dict[str, list[float]]], Result]
    rounds: Callable[[Counts], int]
    rounds_cap: Mapping[str, int] = field(default_factory=dict)


ROUND_SCENARIOS: dict[str, InRounds] = {
    "single": InRounds(single_round, single_summary, lambda counts: counts.single_rounds),
    "drain": InRounds(
        drain_round, drain_summary, lambda counts: counts.drain_rounds, DRAIN_ROUNDS_CAP
    ),
    "drain_async": InRounds(
        lambda run, target: drain_round(run, target, "drain_async"),
        lambda run, system, rates: drain_summary(run, system, rates, "drain_async"),
        lambda counts: counts.drain_rounds,
        DRAIN_ROUNDS_CAP,
    ),
}
# Every scenario, in the order a run takes them.
SCENARIO_NAMES = ["bulk", "single", "drain", "drain_async", "latency", "steady", "claim", "memory"]
MEASUREMENT_ERRORS = (RuntimeError, TimeoutError, OSError, psycopg.Error)


def run_all(
    run: Run, targets: list[Target], broken: dict[System, str], scenarios: list[str]
) -> list[Result]:
    """Scenario by scenario, each system that takes part in turn; a failure is recorded,
    not fatal.

    `broken` holds the systems whose setup failed, with why: they get that error in every
    scenario they take part in, so the table still shows them.
    """
    results: list[Result] = []
    for scenario in scenarios:
        say(f"{run.title(scenario)}...")
        for system, error in broken.items():
            if system.takes_part(scenario):
                results.append(failure(run.title(scenario), system.name, f"setup failed: {error}"))
        taking = [target for target in targets if target.system.takes_part(scenario)]
        if scenario in ROUND_SCENARIOS:
            results += in_rounds(run, taking, scenario)
            continue
        for target in taking:
            started = time.monotonic()
            try:
                results += SCENARIOS[scenario](run, target)
            except MEASUREMENT_ERRORS as error:
                say(f"  {target.system.name} FAILED: {error}")
                results.append(failure(run.title(scenario), target.system.name, first_line(error)))
            say(f"  {target.system.name}: {time.monotonic() - started:.0f}s")
    return results


def in_rounds(run: Run, targets: list[Target], scenario: str) -> list[Result]:
    """A scenario of ROUND_SCENARIOS: round after round, each system in turn (see InRounds)."""
    plan = ROUND_SCENARIOS[scenario]
    rates: dict[str, dict[str, list[float]]] = {target.system.name: {} for target in targets}
    errors: dict[str, str] = {}
    rounds = plan.rounds(run.counts)
    for number in range(rounds):
        say(f"  round {number + 1} of {rounds}")
        turn = number % max(1, len(targets))
        for target in targets[turn:] + targets[:turn]:
            name = target.system.name
            if name in errors or number >= plan.rounds_cap.get(name, rounds):
                continue
            try:
                for setting, rate in plan.measure(run, target).items():
                    rates[name].setdefault(setting, []).append(rate)
            except MEASUREMENT_ERRORS as error:
                say(f"  {name} FAILED: {error}")
                errors[name] = first_line(error)
    results = []
    for target in targets:
        name = target.system.name
        if name in errors:
            results.append(failure(run.title(scenario), name, errors[name]))
        elif rates[name]:
            results.append(plan.summary(run, name, rates[name]))
    return results


def failure(scenario: str, system: str, error: str) -> Result:
    return Result(scenario, "(failed)", system, None, True, error=error)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- report ---------------------------------------------------------------------------------


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return ""
    return f"{value / reference:.2f}x"


def best_peer(group: list[Result], peers: set[str]) -> float | None:
    values = [r.value for r in group if r.system in peers and r.value is not None]
    if not values:
        return None
    return max(values) if group[0].higher_is_better else min(values)


def figure(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def results_table(results: list[Result], peers: set[str], title: str) -> Table:
    caption = (
        "vs best peer: the figure / the better of procrastinate's and pgqueuer's; "
        "vs raw SQL: / the baseline's. ↑ higher is better, ↓ lower is better. Drains: each "
        "system's best setting (every setting in the table below)."
    )
    for name, variant in VARIANTS.items():
        options = " ".join(variant.options)
        caption += f" {name}: the {variant.base} worker with {options}, not a peer."
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column, justify in (
        ("scenario", "left"),
        ("metric", "left"),
        ("system", "left"),
        ("figure", "right"),
        ("vs best peer", "right"),
        ("vs raw SQL", "right"),
        ("notes", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        groups.setdefault((result.scenario, result.metric), []).append(result)
    previous = ""
    for (scenario, metric), group in groups.items():
        reference = best_peer(group, peers)
        raw = next((r.value for r in group if r.system == "raw"), None)
        for n, result in enumerate(group):
            table.add_row(
                scenario if scenario != previous else "",
                metric if n == 0 else "",
                result.system,
                figure(result.value),
                ratio(result.value, reference),
                ratio(result.value, raw),
                result.error or result.note,
                end_section=n == len(group) - 1,
            )
            previous = scenario
    return table


def drain_settings_table(drains: dict[str, dict[str, dict[str, list[float]]]]) -> Table:
    """Every drain setting's figure: the median of its rounds, which are listed too."""
    caption = (
        f"median: of the rounds; vs raw SQL: / the baseline's best setting. {PROCESSES} N: N "
        "worker processes started at once, timed from the first claim of any to the last outcome."
    )
    table = Table(
        title="Drain settings (jobs/s)",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    for column, justify in (
        ("scenario", "left"),
        ("system", "left"),
        ("setting", "left"),
        ("median", "right"),
        ("vs raw SQL", "right"),
        ("rounds", "left"),
        ("", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for scenario, systems_rates in drains.items():
        medians = {
            system: {setting: statistics.median(rounds) for setting, rounds in rates.items()}
            for system, rates in systems_rates.items()
        }
        raw = max(medians.get("raw", {}).values(), default=None)
        rows = [(system, setting) for system, rates in medians.items() for setting in rates]
        for n, (system, setting) in enumerate(rows):
            median = medians[system][setting]
            table.add_row(
                scenario if n == 0 else "",
                system if n == 0 or rows[n - 1][0] != system else "",
                setting,
                figure(median),
                ratio(median, raw),
                ", ".join(f"{rate:,.0f}" for rate in systems_rates[system][setting]),
                "best" if median == max(medians[system].values()) else "",
                end_section=n == len(rows) - 1,
            )
    return table


def report(
    console: Console,
    results: list[Result],
    targets: list[Target],
    header: dict[str, str],
    settings: Settings,
    counts: Counts,
    quick: bool,
) -> None:
    peers = {t.system.name for t in targets if t.system.peer}
    console.print(" | ".join(f"{key} {value}" for key, value in header.items()))
    title = f"pgjobs beside its peers ({'--quick' if quick else 'full run'})"
    console.print(results_table(results, peers, title))
    if settings.drains:
        console.print(drain_settings_table(settings.drains))
    console.print("Settings used (worker arguments per scenario; drain: the best of those tried):")
    for system, used in settings.used.items():
        console.print(f"  {system}: " + "; ".join(f"{k}: {v}" for k, v in used.items()))
    console.print(f"Counts: {asdict(counts)}")


def write_json(
    path: Path,
    results: list[Result],
    header: dict[str, str],
    settings: Settings,
    counts: Counts,
) -> None:
    document = {
        "versions": header,
        "counts": asdict(counts),
        "worker_args": WORKER_ARGS,
        "settings": settings.used,
        "drain_settings": settings.drains,
        "results": [asdict(result) for result in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def versions(cluster_url: str, targets: list[Target], changed: Sequence[str]) -> dict[str, str]:
    """What ran: server, libraries, interpreter, and the server settings that matter most."""
    names = ["server_version", "fsync", "synchronous_commit", "shared_buffers"]
    names += [item.partition("=")[0] for item in changed if item.partition("=")[0] not in names]
    with psycopg.connect(cluster_url) as conn:
        show = {name: str(scalar_row(conn, f"SHOW {name}")) for name in names}
    header = {"PostgreSQL": show.pop("server_version")}
    header |= {t.system.name: t.version for t in targets if not t.system.variant_of}
    header["Python"] = sys.version.split()[0]
    header["CPUs"] = str(os.cpu_count())
    header["server"] = ", ".join(f"{k}={v}" for k, v in show.items())
    return header


def scalar_row(
    conn: psycopg.Connection[Any], query: str | sql.Composed, params: Sequence[Any] = ()
) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def apply_server_settings(cluster_url: str, settings: Sequence[str]) -> None:
    """`--pg-setting NAME=VALUE`: ALTER SYSTEM and a reload, before any system connects."""
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        for item in settings:
            name, _, value = item.partition("=")
            query = "SELECT context FROM pg_settings WHERE name = %s"
            context = scalar_row(conn, query, (name,))
            if context is None or not value:
                raise SystemExit(f"--pg-setting {item!r}: expected NAME=VALUE of a known setting")
            if context == "postmaster":
                raise SystemExit(f"--pg-setting {name}: needs a server restart, not supported")
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")


# -- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller counts (see QUICK in this file), 1-2 minutes",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a reloadable server setting for the cluster, e.g. synchronous_commit=off",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        help=f"comma-separated subset of: {','.join(SCENARIO_NAMES)}",
    )
    parser.add_argument(
        "--systems",
        default=",".join(WORKER_ARGS),
        help=f"comma-separated subset of: {','.join(WORKER_ARGS)}",
    )
    args = parser.parse_args()
    for option, known in (("scenarios", SCENARIO_NAMES), ("systems", WORKER_ARGS)):
        unknown = set(getattr(args, option).split(",")) - set(known)
        if unknown:
            parser.error(f"unknown {option}: {', '.join(sorted(unknown))}")
    check_worker_args()
    return args


def check_worker_args() -> None:
    """An edit of WORKER_ARGS that cannot run fails now, not a quarter of an hour in: only
    drains start several processes (the other scenarios measure one worker's latency or
    memory)."""
    for system, scenarios in WORKER_ARGS.items():
        for scenario, settings in scenarios.items():
            for args in settings:
                where = f"WORKER_ARGS[{system!r}][{scenario!r}] {' '.join(args)!r}"
                try:
                    count, _ = processes_of(args)
                except (IndexError, ValueError):
                    raise SystemExit(f"{where}: {PROCESSES} takes a number") from None
                if count < 1 or (count > 1 and not scenario.startswith("drain")):
                    raise SystemExit(f"{where}: several processes only in drains")


def main() -> None:
    args = parse_args()
    counts = QUICK if args.quick else FULL
    # A pipe or a file gets the full width; a terminal keeps its own.
    console = Console(width=None if sys.stdout.isatty() else 170)
    started = time.monotonic()
    wanted = args.systems.split(",")
    chosen = [s for s in systems(peers_python()) if s.name in wanted]
    settings = Settings()
    with (
        tempfile.TemporaryDirectory(prefix="pgjobs-compare-") as files,
        contextlib.ExitStack() as stack,
    ):
        say("starting a throwaway PostgreSQL cluster...")
        cluster_url = stack.enter_context(temporary_cluster())
        apply_server_settings(cluster_url, args.pg_setting)
        targets: list[Target] = []
        broken: dict[System, str] = {}
        for system in chosen:
            try:
                targets.append(prepare(cluster_url, system))
                stack.callback(targets[-1].admin.close)
            except (RuntimeError, OSError, psycopg.Error, subprocess.SubprocessError) as error:
                say(f"setting up {system.name} FAILED: {error}")
                broken[system] = first_line(error)
        offered = {target.system.name: worker_options(target.system) for target in targets}
        run = Run(counts, Path(files), settings, offered)
        results = run_all(run, targets, broken, args.scenarios.split(","))
        header = versions(cluster_url, targets, args.pg_setting)
    report(console, results, targets, header, settings, counts, args.quick)
    if args.json:
        write_json(args.json, results, header, settings, counts)
    say(f"done in {time.monotonic() - started:.0f}s")


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so workers are stopped and the cluster is removed."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        main()
    except KeyboardInterrupt:
        say("interrupted: workers stopped, cluster removed")
        sys.exit(130)
