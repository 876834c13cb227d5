"""What hooks, middleware and OpenTelemetry cost a worker's drain and a producer, in one run.

    python bench/hooks.py [--database-url URL] [--rounds 3] [--jobs 40000]
                          [--processes 1] [--concurrency 16] [--enqueues 2000]
                          [--batch 1000] [--batches 20] [--before REV] [--only NAMES]

Real `pgjobs work` processes serve bench/hooks_app.py (`hooks_app:app`, run from bench/),
which registers what `BENCH_HOOKS` names (its docstring lists them). Each round takes
these measurements in an order that rotates from round to round (`--only a,b` takes
those alone), every drain with workers started for it and idle when it begins:

- drains, `drain <configuration>`: `--jobs` no-op jobs inserted with SQL due tomorrow,
  VACUUM ANALYZE'd and CHECKPOINTed, then, once `--processes` workers of `--concurrency`
  threads are up and idle, made due in one transaction that also wakes them (the way
  bench/limits.py and bench/workflows.py drain: neither the insert nor the workers'
  start-up is in the figures). Under `otel` each job's `meta` holds a trace context of
  its own, `{"otel": {"traceparent": "00-<trace>-<span>-01"}}`, as `enqueue` stores it
  when the producer is instrumented (the consumer span extracts it and links to it);
  the other configurations' jobs have no `meta`, as a producer without tracing leaves
  them. Two figures per drain:
  - jobs/s over the window from the first claim (`started_at`) to the last outcome
    (`finished_at`), read from the table;
  - the workers' CPU seconds (user + system, /proc/<pid>/stat, every thread of the
    process: the hook dispatcher and the span processor's thread included) per 1,000
    jobs, from just before the jobs are made due until the queue is empty.
  The configurations: `none` (nothing registered), `hook` (one no-op `job_completed`
  handler), `all-hooks` (a no-op handler of each of the eight worker events),
  `middleware` (one no-op `def` middleware), `otel` (`pgjobs.opentelemetry.instrument`,
  an SDK TracerProvider, a BatchSpanProcessor at its defaults, an exporter that drops
  what it is given).
- `drain before` (with `--before REV`, e.g. HEAD, the commit before hooks): the `none`
  drain served by pgjobs at that revision (its `pgjobs/` and `migrations/` exported with
  `git archive`, on a schema its own migrations made).
- `drain before vs none` (with `--before`): both at once, head to head, each with its own
  workers on its own schema, made due in one transaction: the ratio before ÷ now, of the
  rates and of the CPU per job. Both meet the same moment of the machine (steadier on a
  noisy one), and compete for its cores.
- producers, `produce <configuration>`: in a fresh process (`python hooks.py --produce`)
  with an App configured as above, on one connection: `--enqueues` single
  `app.enqueue(conn, "bench.noop", {"n": i})` each followed by `conn.commit()` (the p50
  of each pair's wall time, and the process's CPU time over the loop divided by the
  calls), then `--batches` calls of `app.enqueue_many(conn, <--batch jobs>)` each with
  its commit (the median wall time, and the CPU per call), after an untimed warm-up.
  Configurations: `none`, `enqueue-middleware` (one no-op), `enqueued-hook` (one no-op
  `job_enqueued` handler), `otel` (as above: one PRODUCER span per call, its context
  stored in every job's `meta`), and with `--before`, `before` (`none` at that revision).

Every ratio to `none` is taken within a round (the `none` measured in the same round),
and the table gives the median of the rounds' ratios with their range. The workers and
producers count what their no-ops and exporter were called for (hooks_app.py), and the
run checks each count against the jobs: a hook that was not called, or a span dropped,
is said in the output.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schemas are dropped either way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from harness import (
    drop,
    export_before,
    fill,
    jobs_of,
    make_due,
    median,
    migrate,
    rate,
    reset,
    say,
    scalar,
    spread,
    started_workers,
    wait_drained,
)
from psycopg import sql

HERE = Path(__file__).resolve().parent
APP = "hooks_app:app"
PRODUCE_TIMEOUT = 600.0
DRAINS = ("none", "hook", "all-hooks", "middleware", "otel")
PRODUCERS = ("none", "enqueue-middleware", "enqueued-hook", "otel")
BEFORE = "before"  # pgjobs at --before, nothing registered
WARM_UP = 50  # untimed single enqueues (and 2 batches) before a producer's timed ones
OTHER_EVENTS = (  # the worker events a drain of no-op jobs never has
    "job_retried",
    "job_failed",
    "job_snoozed",
    "job_cancelled",
)
LABELS = {
    "none": "`none`: nothing registered",
    "hook": "`hook`: one no-op `job_completed` handler",
    "all-hooks": "`all hooks`: a no-op handler of each of the 8 worker events",
    "middleware": "`middleware`: one no-op `def` middleware",
    "otel": "`otel`: `instrument()`, BatchSpanProcessor, a null exporter",
    "enqueue-middleware": "`enqueue middleware`: one no-op",
    "enqueued-hook": "`job_enqueued hook`: one no-op handler",
}


@dataclass
class Site:
    """The server, this tree's schema, the one of `--before` and its environment, and a
    folder for the workers' counts."""

    url: str
    schema: str
    files: Path
    before_schema: str | None = None
    before_env: dict[str, str] | None = None


@dataclass
class Figures:
    """Every sample, by measurement and figure, one a round; and what the counts said."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def get(self, name: str) -> list[float]:
        return self.samples.get(name, [])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Each traced job's own trace context in `meta`, as an instrumented producer stores it.
TRACE_CONTEXT = sql.SQL(
    "jsonb_build_object('otel', jsonb_build_object('traceparent', '00-' ||"
    " md5(random()::text) || '-' || left(md5(random()::text), 16) || '-01'))"
)


# --- the drains ---------------------------------------------------------------------------


@dataclass
class Drain:
    """One drain's side: its schema, its configuration (`BENCH_HOOKS`, or BEFORE), and
    where its workers write their counts."""

    schema: str
    config: str
    counts: Path


def environment(site: Site, drain_: Drain) -> dict[str, str]:
    before = drain_.config == BEFORE
    base = site.before_env if before and site.before_env else os.environ
    config = "none" if before else drain_.config
    return dict(base, BENCH_HOOKS=config, BENCH_HOOKS_COUNTS=str(drain_.counts))


@contextmanager
def workers(
    site: Site, drain_: Drain, args: argparse.Namespace
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`--processes` workers of the hooks app up and idle on the drain's schema."""
    drain_.counts.mkdir(parents=True)
    with started_workers(
        site.url,
        drain_.schema,
        args.processes,
        app=APP,
        options=["--concurrency", str(args.concurrency)],
        env=environment(site, drain_),
    ) as started:
        yield started


def drain(site: Site, drains: list[Drain], args: argparse.Namespace) -> list[tuple[float, float]]:
    """`--jobs` no-op jobs in each drain's schema, every drain at once (each with workers of
    its own, the jobs of all made due in one transaction): (jobs/s, the workers' CPU
    seconds per 1,000 jobs) of each."""
    for one in drains:
        reset(site.url, one.schema)
        meta = TRACE_CONTEXT if one.config == "otel" else None
        fill(site.url, one.schema, {"bench.noop": args.jobs}, meta=meta)
    with ExitStack() as stack:
        running = [stack.enter_context(workers(site, one, args)) for one in drains]
        before = [sum(cpu_seconds(p.pid) for p in processes) for processes in running]
        make_due(site.url, [one.schema for one in drains])
        used = []
        for one, processes, cpu in zip(drains, running, before, strict=True):
            wait_drained(site.url, one.schema, processes, every=0.01)
            used.append(sum(cpu_seconds(p.pid) for p in processes) - cpu)
    return [
        (rate(site.url, one.schema, args.jobs), cpu * 1000 / args.jobs)
        for one, cpu in zip(drains, used, strict=True)
    ]


def expected_in_worker(config: str, args: argparse.Namespace) -> dict[str, int]:
    """The calls a drain's workers must have counted, by what was called."""
    jobs, processes = args.jobs, args.processes
    if config == "hook":
        return {"job_completed": jobs}
    if config == "all-hooks":
        return {
            "job_started": jobs,
            "job_completed": jobs,
            "worker_started": processes,
            "worker_stopped": processes,
        } | dict.fromkeys(OTHER_EVENTS, 0)
    if config == "middleware":
        return {"middleware": jobs}
    if config == "otel":
        return {"spans exported": jobs}
    return {}


def read_counts(folder: Path, processes: int) -> dict[str, int]:
    """The counts the workers wrote as they exited, summed."""
    files = sorted(folder.glob("*.json"))
    if len(files) != processes:
        return {"(workers that wrote their counts)": len(files)}
    total: dict[str, int] = {}
    for path in files:
        for name, value in json.loads(path.read_text()).items():
            total[name] = total.get(name, 0) + value
    return total


def check(figures: Figures, what: str, found: dict[str, int], expected: dict[str, int]) -> None:
    """Note what was counted for `what`, and any count that is not the expected one."""
    figures.checks[what] = ", ".join(f"{k} {v:,}" for k, v in found.items()) or "nothing"
    wrong = {k: (found.get(k, 0), v) for k, v in expected.items() if found.get(k, 0) != v}
    extra = set(found) - set(expected)
    if wrong or extra:
        problem = f"{what}: counted {found}, expected {expected}"
        figures.problems.append(problem)
        say(f"    ! {problem}")


def drain_measure(site: Site, args: argparse.Namespace, figures: Figures, name: str) -> None:
    """`drain <config>`, `drain before` or `drain before vs none`."""
    folder = site.files / uuid.uuid4().hex[:8]
    if name == "drain before vs none":
        assert site.before_schema is not None
        drains = [
            Drain(site.schema, "none", folder / "now"),
            Drain(site.before_schema, BEFORE, folder / "before"),
        ]
        (now_rate, now_cpu), (before_rate, before_cpu) = drain(site, drains, args)
        figures.add(f"{name} rate", before_rate / now_rate)
        figures.add(f"{name} cpu", before_cpu / now_cpu)
        return
    config = name.removeprefix("drain ")
    if config == BEFORE:
        assert site.before_schema is not None
        one = Drain(site.before_schema, BEFORE, folder)
    else:
        one = Drain(site.schema, config, folder)
    [(rate, cpu)] = drain(site, [one], args)
    figures.add(f"{name} rate", rate)
    figures.add(f"{name} cpu", cpu)
    found = read_counts(folder, args.processes)
    check(figures, name, found, expected_in_worker(config, args))


# --- the producers ------------------------------------------------------------------------


def produce_measure(site: Site, args: argparse.Namespace, figures: Figures, name: str) -> None:
    """`produce <config>`: one producer process (`--produce`) on a fresh table."""
    config = name.removeprefix("produce ")
    before = config == BEFORE
    schema = site.before_schema if before else site.schema
    assert schema is not None
    reset(site.url, schema)
    env = dict(site.before_env if before and site.before_env else os.environ)
    env.pop("BENCH_HOOKS", None)  # the producer builds its App from --produce alone
    command = [
        sys.executable, str(HERE / "hooks.py"), "--produce", "none" if before else config,
        "--database-url", site.url, "--schema", schema, "--enqueues", str(args.enqueues),
        "--batch", str(args.batch), "--batches", str(args.batches),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=HERE, env=env, check=True, capture_output=True, text=True,
        timeout=PRODUCE_TIMEOUT,
    )  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for figure in ("single p50", "single cpu", "many p50", "many cpu"):
        figures.add(f"{name} {figure}", found[figure])
    calls = found["calls"]
    jobs = calls["jobs"]
    expected: dict[str, int] = {"jobs": jobs, "rows": jobs, "traced rows": 0}
    if config == "enqueue-middleware":
        expected["enqueue middleware"] = calls["enqueue calls"]
    elif config == "enqueued-hook":
        expected["job_enqueued"] = jobs
    elif config == "otel":
        expected |= {"spans exported": calls["enqueue calls"], "traced rows": jobs}
    expected["enqueue calls"] = calls["enqueue calls"]
    check(figures, name, calls, expected)


def produce(args: argparse.Namespace) -> None:
    """The producer's side of one `produce` measurement, in this (fresh) process: prints
    its figures as JSON."""
    from hooks_app import build, counts

    app, provider = build(args.produce, args.database_url, args.schema)
    items = [("bench.noop", {"n": n}) for n in range(args.batch)]
    jobs = calls = 0
    with psycopg.connect(args.database_url) as conn:
        for n in range(WARM_UP):
            app.enqueue(conn, "bench.noop", {"n": n})
            conn.commit()
        for _ in range(2):
            app.enqueue_many(conn, items)
            conn.commit()
        jobs, calls = WARM_UP + 2 * args.batch, WARM_UP + 2
        single: list[float] = []
        cpu = time.process_time()
        for n in range(args.enqueues):
            started = time.perf_counter()
            app.enqueue(conn, "bench.noop", {"n": n})
            conn.commit()
            single.append(time.perf_counter() - started)
        single_cpu = time.process_time() - cpu
        many: list[float] = []
        cpu = time.process_time()
        for _ in range(args.batches):
            started = time.perf_counter()
            app.enqueue_many(conn, items)
            conn.commit()
            many.append(time.perf_counter() - started)
        many_cpu = time.process_time() - cpu
        jobs += args.enqueues + args.batches * args.batch
        calls += args.enqueues + args.batches
        if provider is not None:
            provider.force_flush()
        traced = 0
        if args.produce == "otel":  # (pgjobs before hooks has no `meta` column)
            query = sql.SQL("SELECT count(*) FROM {} WHERE meta ? 'otel'")
            row = conn.execute(query.format(jobs_of(args.schema))).fetchone()
            traced = row[0] if row else 0
        total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(jobs_of(args.schema)))
        rows = (total.fetchone() or (0,))[0]
    if provider is not None:
        provider.shutdown()
    app.close()
    found = counts() | {"jobs": jobs, "enqueue calls": calls, "rows": rows, "traced rows": traced}
    print(
        json.dumps(
            {
                "single p50": median(single) * 1e6,
                "single cpu": single_cpu / args.enqueues * 1e6,
                "many p50": median(many) * 1e3,
                "many cpu": many_cpu / args.batches * 1e3,
                "calls": found,
            }
        )
    )


# --- the rounds ---------------------------------------------------------------------------


def names(site: Site, args: argparse.Namespace) -> list[str]:
    """The measurements of a round, in their first round's order."""
    drains = [f"drain {c}" for c in DRAINS]
    producers = [f"produce {c}" for c in PRODUCERS]
    if site.before_schema is not None:
        drains += [f"drain {BEFORE}", f"drain {BEFORE} vs none"]
        producers.append(f"produce {BEFORE}")
    every = drains + producers
    if args.only:
        chosen = [n.strip() for n in args.only.split(",")]
        unknown = set(chosen) - set(every)
        if unknown:
            raise SystemExit(f"--only: unknown {sorted(unknown)}; known: {every}")
        every = [n for n in every if n in chosen]
    return every


def ratios(figures: Figures, number: int) -> None:
    """Each figure of round `number` over the same round's `none`."""
    for name in list(figures.samples):
        if name.endswith(" ratio") or " vs " in name:
            continue
        kind, _, figure = name.split(" ", 2)
        base = figures.get(f"{kind} none {figure}")
        values = figures.get(name)
        if len(base) > number and len(values) > number:
            figures.add(f"{name} ratio", values[number] / base[number])


def rounds(site: Site, args: argparse.Namespace, figures: Figures) -> None:
    """The measurements in a rotating order, round after round."""
    every = names(site, args)
    for number in range(args.rounds):
        say(f"round {number + 1} of {args.rounds}")
        turn = number % len(every)
        for name in every[turn:] + every[:turn]:
            started = time.monotonic()
            if name.startswith("drain "):
                drain_measure(site, args, figures, name)
            else:
                produce_measure(site, args, figures, name)
            say(f"  {name}: {time.monotonic() - started:.1f}s")
        ratios(figures, number)


# --- the report ---------------------------------------------------------------------------


def cell(figures: Figures, name: str, digits: int = 0, ratio: bool = True) -> str:
    """`median (min-max)` of `name`, and its median ratio to `none` (and their range)."""
    values = figures.get(name)
    if not values:
        return "-"
    text = spread(values, digits)
    over = figures.get(f"{name} ratio")
    if ratio and over and "none" not in name.split(" ")[1:2]:
        text += f"; {median(over):.2f}x ({min(over):.2f}-{max(over):.2f})"
    return text


def times(values: list[float]) -> str:
    """A ratio's median and range: `1.01x (0.89-1.04)`."""
    return f"{median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def drain_report(figures: Figures, args: argparse.Namespace) -> list[str]:
    """The drains' table (nothing when none was measured)."""
    rows = []
    for config in (*DRAINS, BEFORE):
        name = f"drain {config}"
        if figures.get(f"{name} rate"):
            label = LABELS.get(config, f"`none` served by pgjobs at {args.before}")
            rate, cpu = cell(figures, f"{name} rate"), cell(figures, f"{name} cpu", 3)
            rows.append(f"| {label} | {rate} | {cpu} |")
    h2h = "drain before vs none"
    if rates := figures.get(f"{h2h} rate"):
        rows.append(
            f"| head to head: {args.before} ÷ this tree, both `none`, each round's ratio "
            f"| {times(rates)} | {times(figures.get(f'{h2h} cpu'))} |"
        )
    if not rows:
        return []
    threads = f"{args.processes} process{'es' * (args.processes > 1)} x {args.concurrency}"
    return [
        f"Drain of {args.jobs:,} no-op jobs by {threads} threads: median (min-max) of the "
        "rounds; ratio: the median (min-max) of each round's figure over its `none`\n",
        "| configuration | jobs/s; ratio to `none` | worker CPU per 1,000 jobs (s); ratio |",
        "| --- | ---: | ---: |",
        *rows,
        "",
    ]


def produce_report(figures: Figures, args: argparse.Namespace) -> list[str]:
    """The producers' table (nothing when none was measured)."""
    rows = []
    for config in (*PRODUCERS, BEFORE):
        name = f"produce {config}"
        if figures.get(f"{name} single p50"):
            label = LABELS.get(config, f"`none` on pgjobs at {args.before}")
            cells = " | ".join(
                cell(figures, f"{name} {figure}", digits)
                for figure, digits in (
                    ("single p50", 0),
                    ("single cpu", 0),
                    ("many p50", 1),
                    ("many cpu", 1),
                )
            )
            rows.append(f"| {label} | {cells} |")
    if not rows:
        return []
    return [
        f"Producer, one connection: `enqueue` + commit, {args.enqueues:,} calls; "
        f"`enqueue_many` of {args.batch:,} jobs + commit, {args.batches} calls; CPU: the "
        "producer process's, all threads, over the loop, per call\n",
        "| configuration | `enqueue` p50 (µs); ratio | its CPU (µs); ratio "
        f"| `enqueue_many` {args.batch:,}, median (ms); ratio | its CPU (ms); ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def report(figures: Figures, args: argparse.Namespace) -> str:
    lines = [*drain_report(figures, args), *produce_report(figures, args)]
    lines += ["Counted by the no-ops and the exporter (the last round of each):", ""]
    lines += [f"- {what}: {text}" for what, text in sorted(figures.checks.items())]
    if figures.problems:
        lines += ["", "COUNTS THAT DO NOT MATCH THE JOBS:", ""]
        lines += [f"- {problem}" for problem in figures.problems]
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=40_000, help="no-op jobs of a drain")
    parser.add_argument("--processes", type=int, default=1, help="worker processes of a drain")
    parser.add_argument("--concurrency", type=int, default=16, help="their threads")
    parser.add_argument("--enqueues", type=int, default=2_000, help="timed single enqueues")
    parser.add_argument("--batch", type=int, default=1_000, help="jobs of an enqueue_many")
    parser.add_argument("--batches", type=int, default=20, help="timed enqueue_many calls")
    parser.add_argument("--before", help="a git revision to compare the `none` drain with")
    parser.add_argument("--only", help="these measurements alone, e.g. 'drain none,drain otel'")
    parser.add_argument("--produce", choices=PRODUCERS, help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)  # --produce's
    args = parser.parse_args()
    if args.produce:
        produce(args)
        return
    from pgjobs.embedded import temporary_cluster
    from pgjobs.migrate import upgrade

    run = uuid.uuid4().hex[:8]
    figures = Figures()
    began = time.monotonic()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hooks-")))
        site = Site(url, f"bench_hk_{run}", files)
        upgrade(url, site.schema)
        stack.callback(drop, url, site.schema)
        if args.before:
            site.before_env = export_before(args.before, files / "before")
            site.before_schema = f"bench_hk_{run}_before"
            migrate(url, site.before_schema, site.before_env)
            stack.callback(drop, url, site.before_schema)
        version = scalar(url, "SHOW server_version")
        rounds(site, args, figures)
        print(
            f"pgjobs hooks and tracing, {args.rounds} rounds, PostgreSQL {version}, "
            f"{os.cpu_count()} cores, {time.monotonic() - began:.0f} s\n"
        )
        print(report(figures, args))


if __name__ == "__main__":
    main()
