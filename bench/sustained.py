"""A steady flow of jobs for minutes against a worker fleet, autovacuum alone keeping the
hot table in shape: does the claim slow down, the table bloat, the workers' memory grow?
(issue 30, point 4)

    python bench/sustained.py [--database-url URL] [--seconds 300] [--rate 2000]
                              [--workers 2] [--concurrency 10] [--producers 2]
                              [--threads 8] [--per-commit 1] [--warmup 10]

One schema, migrated with `pgjobs migrate`, server settings untouched (autovacuum on).
`--workers` processes of `pgjobs work --concurrency N` (durable claims, the default) serve
`bench/peers/pgjobs_bench.py`'s app, run through `bench/profile/worker.py`, which logs each
CLAIM call (when it began, rows claimed, seconds: the client's round trip) and whose
no-op task appends its start time to a file (compare.py's StartMarks). `--producers`
processes of `--threads` threads each enqueue single jobs with `job.enqueue(conn, ...)`,
`--per-commit` a transaction (one by default), every job due at a fixed time
(pgjobs_bench.produce: a late one does not push the next ones back), `--rate` jobs/s
between them, and record when each commit returned. (One thread, one commit after the
other, makes 600-750 jobs/s on 2 cores with fsync on; one process of 8 threads about
1,200 on a busy machine: 2,000 single-job commits a second are beyond 2 cores that also
run the workers, so `--per-commit 4` offers 2,000 jobs/s in 500 commits a second.)

The first `--warmup` seconds are not counted; then, for `--seconds`, every 10 s: jobs_live's
live and dead tuples, its size (table, indexes), its autovacuums and autoanalyzes, the
jobs waiting and running, each worker's RSS (/proc), the CPU of the workers, of this
script's processes, of the server and of the rest of the machine, and a probe: EXPLAIN
(ANALYZE, BUFFERS) of the workers' claim (limit 10) as `claim_jobs` plans it
(pgjobs.data.function_plans), on a connection of its own, rolled back: its time, and the
scan of jobs_live its plan chose. Pickup is a task's start
less its commit's return, by interval of commit; completions are counted by task starts
(the task is a no-op). Claim time is the first minute against the last (a quarter of the
run each, for runs under 4 minutes): ms per claim that found jobs, µs per job claimed,
and ms per claim that found none; the target is last/first <= 1.5. At the end: table and
index sizes of jobs_live and of the history, and whether the fleet kept up (under a
second's worth of jobs waiting when the window ended; how long the rest took).

The workers inherit PYTHONPATH (after bench/peers), so pgjobs exported at another
revision (harness.export_before) can be measured the same way.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schema is dropped either way.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from harness import HERE, STARTUP_TIMEOUT, drop, migrate, say, scalar, stop, wait_drained
from psycopg import sql

PEERS = HERE / "peers"
sys.path.insert(0, str(PEERS))

import pgjobs_bench  # noqa: E402  (bench/peers: the app, its task and its producer)
from _common import STARTS_FILE_VARIABLE, Schedule  # noqa: E402
from comparison.common.latency import percentile_or_nan as pct  # noqa: E402
from comparison.common.latency import read_marks  # noqa: E402
from comparison.common.workers import status_kb  # noqa: E402
from history import busy_seconds, cpu_seconds, ours, postmaster  # noqa: E402

from pgjobs.data.function_plans import explain_claim  # noqa: E402

EVERY = 10.0  # seconds between samples
EDGE = 60.0  # the claim's "first" and "last" minute
START_LEAD = 5.0  # seconds for the producer processes to start before the first job
DRAIN_WAIT = 120.0  # seconds the fleet may take to finish what is left at the end
PROBE: dict[str, Any] = {"limit": 10, "begin": 10, "queue": None}
LIVE = """
SELECT n_live_tup, n_dead_tup, pg_relation_size(relid), pg_indexes_size(relid),
       pg_total_relation_size(relid), autovacuum_count, autoanalyze_count,
       (SELECT count(*) FROM {live} WHERE state = 'available'),
       (SELECT count(*) FROM {live} WHERE state = 'running')
FROM pg_stat_user_tables WHERE relid = %s::regclass
"""
HISTORY = """
SELECT (SELECT count(*) FROM {history}),
       (SELECT count(*) FROM {history} WHERE state <> 'completed'),
       count(*) FILTER (WHERE t.isleaf), sum(pg_total_relation_size(t.relid)),
       sum(pg_indexes_size(t.relid)),
       coalesce(sum(s.autovacuum_count), 0), coalesce(sum(s.autoanalyze_count), 0)
FROM pg_partition_tree(%s::regclass) AS t LEFT JOIN pg_stat_user_tables AS s USING (relid)
"""
SETTINGS = """
SELECT name, setting || coalesce(unit, '') FROM pg_settings
WHERE name ~ '^autovacuum' AND name !~ 'multixact|work_mem|max_workers' ORDER BY name
"""


class Live(NamedTuple):
    """jobs_live at a sample: its tuples and bytes, autovacuums so far, jobs in it."""

    live: int
    dead: int
    table: int
    indexes: int
    total: int
    autovacuums: int
    autoanalyzes: int
    waiting: int
    running: int


@dataclass
class Sample:
    """The state at `at` seconds into the window; `cpu` cumulative seconds by part."""

    at: float
    live: Live
    rss: list[int]  # bytes, each worker process
    probe_ms: float  # the probe's Execution Time
    plan: str  # its scans of jobs_live
    buffers: int  # shared buffers its claimable scan touched
    cpu: dict[str, float]


def produce(
    url: str, schema: str, jobs: range, rate: float, lanes: int, begin: float, per_commit: int
) -> list[Any]:
    """One producer process: `jobs` (their numbers) paced from `begin` (monotonic, which
    every process of this machine shares), `per_commit` a transaction; [(n, commit time),
    ...]."""
    pgjobs_bench.app.configure(schema=schema)
    time.sleep(max(0.0, begin - Schedule.LEAD - time.monotonic()))
    return pgjobs_bench.produce(url, len(jobs), rate, jobs.start, lanes, per_commit)


def start_workers(
    stack: ExitStack, url: str, schema: str, args: argparse.Namespace, files: Path
) -> list[subprocess.Popen[bytes]]:
    """The fleet, up (registered): stopped on the way out."""
    command = [
        sys.executable, str(HERE / "profile" / "worker.py"), "--app", "pgjobs_bench:app",
        "--database-url", url, "--schema", schema, "--log-level", "WARNING",
        "--concurrency", str(args.concurrency),
    ]  # fmt: skip
    workers = []
    path = os.pathsep.join([str(PEERS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for k in range(args.workers):
        env = dict(
            os.environ,
            PYTHONPATH=path,
            PROFILE_STATE=str(files / f"state-{k}"),
            PROFILE_CLAIMS=str(files / f"claims-{k}"),
        )
        env[STARTS_FILE_VARIABLE] = str(files / f"starts-{k}")
        workers.append(subprocess.Popen(command, cwd=PEERS, env=env, start_new_session=True))
        stack.callback(stop, workers[-1])
    registered = sql.SQL("SELECT count(*) FROM {} WHERE pid = ANY(%s)").format(
        sql.Identifier(schema, "workers")
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while scalar(url, registered, [[w.pid for w in workers]]) < len(workers):
        if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
            raise RuntimeError("the workers did not start")
        time.sleep(0.1)
    return workers


def scans(node: dict[str, Any]) -> list[str]:
    """The scans of jobs_live under a plan node, e.g. `Index Scan jobs_fetch_any_queue_idx`
    (a bitmap scan with its index scans' indexes)."""
    found = []
    children = node.get("Plans", [])
    if node.get("Relation Name") == "jobs_live":
        used = [node.get("Index Name", "")]
        used += [c.get("Index Name", "") for c in children if c["Node Type"] == "Bitmap Index Scan"]
        found.append(" ".join([node["Node Type"], *filter(None, used)]))
    for child in children:
        found += scans(child)
    return found


def claim_node(node: dict[str, Any]) -> dict[str, Any] | None:
    """The plan of the CTE `claimable`: where the claim looks for waiting jobs."""
    if node.get("Subplan Name") == "CTE claimable":
        return node
    for child in node.get("Plans", []):
        if (found := claim_node(child)) is not None:
            return found
    return None


class Sampler:
    """Reads what a sample holds, on connections of its own."""

    def __init__(
        self, stack: ExitStack, url: str, schema: str, workers: list[subprocess.Popen[bytes]]
    ) -> None:
        self.stats = stack.enter_context(psycopg.connect(url, autocommit=True))
        self.probe = stack.enter_context(psycopg.connect(url, prepare_threshold=None))
        self.live = sql.Identifier(schema, "jobs_live").as_string(self.stats)
        self.history = sql.Identifier(schema, "jobs_history").as_string(self.stats)
        self.schema = schema
        self.server = postmaster(self.stats)
        self.workers = workers
        self.explain()  # the first one reads the catalogs

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the machine's busy time, the workers', this script's
        processes' (producers included), the server's (NaN when not on this machine)."""
        mine = os.getpid()
        producers = [p.pid for p in multiprocessing.active_children() if p.pid]
        used = {"busy": busy_seconds(), "workers": 0.0, "bench": cpu_seconds(mine, False)}
        for key, pids in (("workers", [w.pid for w in self.workers]), ("bench", producers)):
            for pid in pids:
                with suppress(OSError):
                    used[key] += cpu_seconds(pid, False)
        used["server"] = ours(self.server) - cpu_seconds(mine, False)
        return used

    def explain(self) -> dict[str, Any]:
        """EXPLAIN ANALYZE of a claim (PROBE) as the workers' `claim_jobs` runs it."""
        [[explained]] = explain_claim(
            self.probe, self.schema, **PROBE, options="ANALYZE, BUFFERS, FORMAT JSON"
        )
        plan: dict[str, Any] = explained[0]
        return plan

    def read(self, query: str, name: str, param: str) -> tuple[int, ...]:
        """The one row of `query`, `{name}` the table named `param`, as integers."""
        statement = sql.SQL(query).format(**{name: sql.SQL(param)})
        row = self.stats.execute(statement, [param]).fetchone()
        assert row is not None
        return tuple(int(value or 0) for value in row)

    def sample(self, at: float) -> Sample:
        live = Live(*self.read(LIVE, "live", self.live))
        plan = self.explain()
        node = claim_node(plan["Plan"]) or plan["Plan"]
        buffers = int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))
        rss = [status_kb(w.pid, "VmRSS") * 1024 for w in self.workers]
        plans = ", ".join(scans(node)) or "?"
        return Sample(at, live, rss, plan["Execution Time"], plans, buffers, self.cpu())

    def history_sizes(self) -> tuple[int, ...]:
        """Rows, those not completed, partitions, total and index bytes, autovacuums and
        autoanalyzes."""
        return self.read(HISTORY, "history", self.history)

    def settings(self) -> str:
        """The server's autovacuum settings, for the report."""
        return ", ".join(f"{name} {value}" for name, value in self.stats.execute(SETTINGS))


def read_claims(files: Path) -> list[tuple[float, int, float]]:
    """Every logged CLAIM call of the fleet: began (wall clock), rows, seconds."""
    calls = []
    for path in files.glob("claims-*"):
        for line in path.read_text().splitlines():
            began, rows, seconds = line.split()
            calls.append((float(began), int(rows), float(seconds)))
    return sorted(calls)


@dataclass
class Outcome:
    """What a run left: samples; commits, task starts and claims (wall clock, the starts
    and claims read from `files`); `end`: readings after the window."""

    args: argparse.Namespace
    start: float  # the window's, wall clock
    samples: list[Sample]
    commits: list[tuple[int, float]]
    files: Path
    end: dict[str, Any]
    starts: dict[int, float] = field(init=False, default_factory=dict)
    claims: list[tuple[float, int, float]] = field(init=False, default_factory=list)
    times: dict[str, list[float]] = field(init=False, default_factory=dict)  # each sorted

    def __post_init__(self) -> None:
        for path in self.files.glob("starts-*"):
            self.starts.update(read_marks(path))
        self.claims = read_claims(self.files)
        self.commits.sort(key=lambda commit: commit[1])
        self.times = {
            "commits": [t for _, t in self.commits],
            "starts": sorted(self.starts.values()),
            "claims": [began for began, _, _ in self.claims],
        }

    def during(self, kind: str, a: float, b: float) -> slice:
        """Where the `kind` times in [a, b) are."""
        times = self.times[kind]
        return slice(bisect_left(times, a), bisect_left(times, b))

    def between(self, lo: float, hi: float) -> dict[str, Any]:
        """Figures of the jobs committed, the tasks started and the claims begun in
        [lo, hi) (seconds into the window): pickups (ms) by commit time."""
        a, b = self.start + lo, self.start + hi
        committed = self.commits[self.during("commits", a, b)]
        pickups = [(self.starts[n] - t) * 1000 for n, t in committed if n in self.starts]
        calls = self.claims[self.during("claims", a, b)]
        full = [(rows, seconds) for _, rows, seconds in calls if rows]
        started = self.during("starts", a, b)
        return {
            "offered": len(committed) / (b - a),
            "completed": (started.stop - started.start) / (b - a),
            "pickup": pickups,
            "missing": len(committed) - len(pickups),
            "claim_ms": [seconds * 1000 for _, seconds in full],
            "claim_us_job": [seconds * 1e6 / rows for rows, seconds in full],
            "empty_ms": [seconds * 1000 for _, rows, seconds in calls if not rows],
            "empty": len(calls) - len(full),
        }


def pair(values: Sequence[float], digits: int = 1) -> str:
    return f"{pct(values, 50):,.{digits}f} / {pct(values, 99):,.{digits}f}"


def mb(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def sample_row(out: Outcome, before: Sample | None, s: Sample) -> str:
    """A row of the 10 s table: the state at `s`, and what happened since `before`."""
    first, live = out.samples[0].live, s.live
    state = (
        f"| {s.at:.0f} | {live.live:,} / {live.dead:,} | {mb(live.table)} / {mb(live.indexes)} "
        f"| {live.autovacuums - first.autovacuums} / {live.autoanalyzes - first.autoanalyzes} "
        f"| {live.waiting:,} / {live.running:,} | {' + '.join(mb(r) for r in s.rss)} "
    )
    probe = f"| {s.probe_ms:.2f} | {s.plan} ({s.buffers:,}) "
    if before is None:
        return state + "| | " + probe + "| |"
    got, span = out.between(before.at, s.at), s.at - before.at
    cores = {key: (s.cpu[key] - before.cpu[key]) / span for key in s.cpu}
    others = cores["busy"] - cores["workers"] - cores["bench"] - cores["server"]
    return (
        state + f"| {pair(got['pickup'])} | {got['completed']:,.0f} " + probe
        + f"| {cores['workers']:.2f} / {cores['bench']:.2f} / {cores['server']:.2f} "
        f"/ {others:.2f} |"
    )  # fmt: skip


def sample_table(out: Outcome) -> list[str]:
    samples = out.samples
    return [
        "| s | live / dead tuples | jobs_live MB (table / indexes) | autovacuums / -analyzes "
        "| waiting / running | worker RSS MB | pickup p50 / p99 ms | completed/s | probe ms "
        "| probe's scan of jobs_live (buffers) | CPU cores: workers / bench / server / others |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        sample_row(out, None, samples[0]),
        *(sample_row(out, a, b) for a, b in pairwise(samples)),
    ]


def period_table(out: Outcome, period: float) -> list[str]:
    lines = [
        f"| {'minute' if period == EDGE else f'{period:.0f} s'} | offered/s | completed/s "
        "| pickup p50 / p99 ms | claim ms p50 / p99 | claim µs/job p50 / p99 "
        "| claims (empty) | dead tuples | jobs_live MB | worker RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in range(math.ceil(out.args.seconds / period)):
        hi = min((k + 1) * period, out.args.seconds)
        got = out.between(k * period, hi)
        s = max((s for s in out.samples if s.at <= hi), key=lambda s: s.at)
        lines.append(
            f"| {k + 1} | {got['offered']:,.0f} | {got['completed']:,.0f} "
            f"| {pair(got['pickup'])} | {pair(got['claim_ms'], 2)} "
            f"| {pair(got['claim_us_job'])} | {len(got['claim_ms']):,} ({got['empty']:,}) "
            f"| {s.live.dead:,} | {mb(s.live.total)} | {mb(sum(s.rss))} |"
        )
    return lines


def claim_lines(out: Outcome, edge: float) -> list[str]:
    """The claim's first `edge` seconds against its last: the target."""
    seconds = out.args.seconds
    first, last = out.between(0, edge), out.between(seconds - edge, seconds)
    lines = []
    for key, what, digits in (
        ("claim_ms", "ms per claim that found jobs", 2),
        ("claim_us_job", "µs per job claimed", 1),
        ("empty_ms", "ms per claim that found none", 2),
    ):
        ratios = [pct(last[key], p) / pct(first[key], p) for p in (50, 99)]
        lines.append(
            f"- claim, {what}: first {edge:g} s p50 / p99 {pair(first[key], digits)}, last "
            f"{edge:g} s {pair(last[key], digits)}: last/first {ratios[0]:.2f}x / "
            f"{ratios[1]:.2f}x (target <= 1.5x: {'met' if max(ratios) <= 1.5 else 'NOT met'})"
        )
    samples = out.samples
    plans = sorted({s.plan for s in samples})
    lines.append(
        f"- probe: {samples[0].probe_ms:.2f} ms at the start, {samples[-1].probe_ms:.2f} ms at "
        f"the end, most {max(s.probe_ms for s in samples):.2f}; plans: "
        + "; ".join(f"{p} ({sum(s.plan == p for s in samples)}x)" for p in plans)
    )
    return lines


def cpu_line(out: Outcome) -> str:
    """The CPU the window took, by part, in cores and per job completed."""
    first, last, seconds = out.samples[0].cpu, out.samples[-1].cpu, out.args.seconds
    used = {key: last[key] - first[key] for key in first}
    used["others"] = used["busy"] - used["workers"] - used["bench"] - used["server"]
    jobs = out.between(0, seconds)["completed"] * seconds
    return "- CPU over the window (cores, µs per job): " + ", ".join(
        f"{key} {used[key] / seconds:.2f} ({used[key] * 1e6 / jobs:,.0f})"
        for key in ("workers", "server", "bench", "others")
    )


def summary(out: Outcome) -> list[str]:
    seconds = out.args.seconds
    edge = min(EDGE, seconds / 4)
    whole = out.between(0, seconds)
    pickup = whole["pickup"]
    short = whole["offered"] < 0.95 * out.args.rate
    lines = [
        f"- offered {whole['offered']:,.0f} jobs/s (target {out.args.rate:,.0f}"
        + ("; SHORT: the producers' commits fell behind their schedule" * short)
        + f"), completed {whole['completed']:,.0f} jobs/s over the window",
        f"- pickup over the window: p50 {pct(pickup, 50):,.1f} ms, p95 {pct(pickup, 95):,.1f}, "
        f"p99 {pct(pickup, 99):,.1f}, max {pct(pickup, 100):,.1f} ({len(pickup):,} jobs; "
        f"{whole['missing']:,} committed in the window never started)",
        *claim_lines(out, edge),
    ]
    early = [s for s in out.samples if 0 < s.at <= edge] or out.samples[:1]
    late = [s for s in out.samples if s.at >= seconds - edge]
    for k, peak in enumerate(out.end["peaks"]):
        a, b = (max(s.rss[k] for s in group) for group in (early, late))
        lines.append(
            f"- worker {k + 1} RSS: first {edge:g} s at most {mb(a)} MB, last {edge:g} s "
            f"{mb(b)} MB ({(b - a) / 2**20:+,.1f} MB); peak (VmHWM) {mb(peak)} MB"
        )
    lines.append(cpu_line(out))
    start, end, drained = out.samples[0].live, out.samples[-1].live, out.end["drained"]
    rows, failed, parts, total, indexes, vacuums, analyzes = out.end["history"]
    return [
        *lines,
        f"- kept up: {'yes' if end.waiting < out.args.rate else 'NO'}: {end.waiting:,} jobs "
        f"waiting and {end.running:,} running at the end of the window; the rest done "
        + (f"{drained:.1f} s later" if drained is not None else f"NOT within {DRAIN_WAIT:.0f} s"),
        f"- jobs_live: table {mb(start.table)} -> {mb(end.table)} MB, indexes "
        f"{mb(start.indexes)} -> {mb(end.indexes)} MB, total {mb(start.total)} -> "
        f"{mb(end.total)} MB, dead tuples {start.dead:,} -> {end.dead:,}; "
        f"{end.autovacuums - start.autovacuums} autovacuums and "
        f"{end.autoanalyzes - start.autoanalyzes} autoanalyzes in the window",
        f"- history at the end: {rows:,} jobs ({failed:,} not completed) in {parts} "
        f"partitions, {mb(total)} MB of which "
        f"indexes {mb(indexes)} MB; {vacuums} autovacuums and {analyzes} autoanalyzes in all",
    ]


def per_commit(jobs: int) -> str:
    return "one job per transaction" if jobs == 1 else f"{jobs} jobs per transaction"


def report(out: Outcome, took: float) -> str:
    args = out.args
    head = (
        f"pgjobs under sustained load: {args.rate:,.0f} jobs/s for {args.seconds:.0f} s after "
        f"{args.warmup:.0f} s untimed; {args.workers} worker processes x --concurrency "
        f"{args.concurrency} (durable claims); {args.producers} producer processes x "
        f"{args.threads} threads, {per_commit(args.per_commit)}; PostgreSQL {out.end['version']}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {took:.0f} s in all"
    )
    every = f"Every {EVERY:.0f} s (pickups and completions since the sample before):"
    period = EDGE if args.seconds >= 2 * EDGE else EVERY
    return "\n".join([
        head, "", out.end["settings"], "", *summary(out), "", every, "", *sample_table(out),
        "", *period_table(out, period),
    ])  # fmt: skip


def start_producers(
    pool: ProcessPoolExecutor, url: str, schema: str, args: argparse.Namespace, begin: float
) -> list[Future[list[Any]]]:
    """The producer processes, each its share of the jobs and of the rate."""
    share, extra = divmod(round(args.rate * (args.warmup + args.seconds)), args.producers)
    futures = []
    for k in range(args.producers):
        first = k * share + min(k, extra)
        jobs = range(first, first + share + (k < extra))
        rate = args.rate / args.producers
        futures.append(
            pool.submit(produce, url, schema, jobs, rate, args.threads, begin, args.per_commit)
        )
    return futures


def run(url: str, schema: str, args: argparse.Namespace, files: Path) -> Outcome:
    """The fleet, the producers and the samples, as the docstring says."""
    spawn = multiprocessing.get_context("spawn")
    with ExitStack() as stack:
        workers = start_workers(stack, url, schema, args, files)
        sampler = Sampler(stack, url, schema, workers)
        pool = stack.enter_context(ProcessPoolExecutor(args.producers, mp_context=spawn))
        begin, start = time.monotonic() + START_LEAD, time.time() + START_LEAD + args.warmup
        futures = start_producers(pool, url, schema, args, begin)
        samples = []
        for due in [*(k * EVERY for k in range(math.ceil(args.seconds / EVERY))), args.seconds]:
            time.sleep(max(0.0, begin + args.warmup + due - time.monotonic()))
            if any(w.poll() is not None for w in workers) or any(
                f.done() and f.exception() for f in futures
            ):
                raise RuntimeError("a worker or a producer stopped")
            samples.append(sampler.sample(due))
            live = samples[-1].live
            say(f"  {due:4.0f} s: {live.waiting:,} waiting, {live.dead:,} dead tuples, probe "
                f"{samples[-1].probe_ms:.2f} ms ({samples[-1].plan})")  # fmt: skip
        end: dict[str, Any] = {"history": sampler.history_sizes(), "settings": sampler.settings()}
        commits = [commit for future in futures for commit in future.result()]
        ended = time.monotonic()
        try:
            wait_drained(url, schema, workers, timeout=DRAIN_WAIT, every=0.1)
            end["drained"] = time.monotonic() - ended
        except RuntimeError:
            end["drained"] = None
        time.sleep(0.5)  # the claim logs are written every 0.1 s
        end["peaks"] = [status_kb(w.pid, "VmHWM") * 1024 for w in workers]
        end["version"] = scalar(url, "SHOW server_version")
    return Outcome(args, start, samples, commits, files, end)


def main() -> None:
    from pgjobs.embedded import temporary_cluster

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--seconds", type=float, default=300.0, help="timed")
    parser.add_argument("--rate", type=float, default=2000.0, help="jobs enqueued per second")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=10, help="each worker's threads")
    parser.add_argument("--producers", type=int, default=2, help="producer processes")
    parser.add_argument("--threads", type=int, default=8, help="each producer's threads")
    parser.add_argument(
        "--per-commit", type=int, default=1, help="jobs a producer's transaction enqueues"
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="untimed seconds first")
    args = parser.parse_args()
    schema = f"bench_sustained_{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        migrate(url, schema)
        stack.callback(drop, url, schema)
        files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sustained-")))
        say(f"{args.rate:,.0f} jobs/s for {args.warmup:.0f} + {args.seconds:.0f} s on {schema}")
        out = run(url, schema, args, files)
        print(report(out, time.monotonic() - began))


if __name__ == "__main__":
    main()
