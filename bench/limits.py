"""Concurrency and rate limits, and what they cost plain jobs, measured in one run.

    python bench/limits.py [--database-url URL] [--rounds 3] [--processes 4]
                           [--concurrency 16] [--slow 400] [--rated 1000]
                           [--jobs 20000] [--drain-processes 2] [--drain-concurrency 10]
                           [--poll-interval S] [--before REV] [--only NAMES] [--explain]

Real `pgjobs work` processes serve bench/limits_app.py (`limits_app:app`, run from
bench/). Each round takes these measurements in a rotating order, each with workers
started for it and idle when it begins (`--only a,b` takes those alone):

- `concurrency`: `--slow` jobs of `bench.slow` (`concurrency=10`, each sleeps 50 ms)
  and `--jobs` jobs of the unlimited `bench.noop`, inserted due tomorrow, VACUUM
  ANALYZE'd, then made due in one transaction, the limited ones a second earlier (first
  in line), served by `--processes` workers of `--concurrency` threads (and
  `--poll-interval`, when given). Read: the most task bodies running at once (each body
  appends when it began and ended, by the machine's clock, to a file of its process:
  the exact overlap, which must never pass 10); the most jobs `running` at once in the
  table, sampled every 2 ms; the most `started_at`-`finished_at` intervals overlapping
  (both are `now()`, the start of their transactions, so this can exceed the limit
  without any job running over it); the limited task's throughput, first claim to last
  outcome, against the ideal 10 / 0.05 s = 200 jobs/s; and the no-op jobs' throughput
  over their own window, drained beside it.
- `noop alone`: the same no-op jobs on the same workers, nothing limited waiting: the
  baseline of the no-op drains beside limited tasks.
- `rated`: `--rated` jobs of `bench.rated` (`rate_limit="200/s"`, a no-op) on the same
  workers: the most starts (`started_at`) in any sliding 1 s window (must be at most
  200), those of its first second, and its rate after the first window's burst,
  (jobs - 200) / (first start to last start), against 200/s.
- `mixed`: the jobs of `concurrency` and of `rated` at once, on the same workers (two
  limited tasks: each claim may lock both buckets): the same figures.
- `split`: the jobs of `concurrency` (but the no-op ones) and of `rated`, each task's in
  a queue of its own, half the processes serving one queue and half the other
  (`--queues`): the same figures.
- `plain`: `--jobs` no-op jobs drained by `--drain-processes` workers of
  `--drain-concurrency` threads whose App declares no limit: no limit exists anywhere
  (the plain claim as before limits).
- `limited`: the same drain while limited tasks exist: the workers' App declares them,
  and three jobs of `bench.rare` (`rate_limit="1/h"`) wait (over their limit) while the
  plain jobs drain. Each claim then looks for limited jobs first, then claims the others.
- `limited vs plain`: both at once, head to head, each with its own workers in a schema
  of its own (the schemas swap roles between rounds): the ratio limited / plain. Both
  meet the same machine at the same moment (steadier on a noisy machine), but share
  the server too: the limited drain's extra work slows the other as well.
- `before` and `before vs plain` (with `--before REV`, e.g. HEAD): the plain drain
  served by pgjobs at that git revision (exported with `git archive`, on a schema its own
  migrations made), alone and head to head with this tree's plain drain.

The deadlocks the server detected while each measurement ran (pg_stat_database's count
for the database, so on a shared server others' too) are summed over the rounds.

`--explain` then runs, untimed, EXPLAIN ANALYZE (rolled back) of the statements of one
claim while the limited bucket is full, with `--jobs` and ten times as many plain jobs
waiting: LOCK_BUCKETS, CLAIM_LIMITED and the plain CLAIM, as the worker sends them.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schemas are dropped either way.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from harness import (
    drop,
    export_before,
    fill,
    jobs_of,
    live_of,
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
REPO = HERE.parent
APP = "limits_app:app"
SAMPLE_EVERY = 0.002  # seconds between two counts of the limited task's running jobs
CONCURRENCY = 10  # bench.slow's limit
SLOW_SECONDS = 0.05  # bench.slow's sleep
RATE = 200  # bench.rated's limit, per second
RARE_WAITING = 3  # bench.rare jobs beside the `limited` drain (one start an hour)


@dataclass
class Site:
    """The server, this tree's two schemas (they swap roles between rounds), the one of
    `--before`, and a folder for the task bodies' marks."""

    url: str
    pair: tuple[str, str]
    files: Path
    before_schema: str | None = None
    before_env: dict[str, str] | None = None


@dataclass
class Figures:
    """Every sample, by measurement."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, *values: float) -> None:
        self.samples.setdefault(name, []).extend(values)

    def get(self, name: str) -> list[float]:
        return self.samples.get(name, [])


# --- workers ------------------------------------------------------------------------------

# Whom a drain's workers run as: this tree with its App's limits, this tree without
# them, or pgjobs at --before (without them: it knows none).
LIMITED, UNLIMITED, BEFORE = "limited", "unlimited", "before"


def environment(site: Site, kind: str, marks: Path | None = None) -> dict[str, str]:
    base = site.before_env if kind == BEFORE and site.before_env else os.environ
    env = dict(base, BENCH_LIMITS="on" if kind == LIMITED else "off")
    env.pop("BENCH_LIMITS_MARKS", None)
    if marks is not None:
        env["BENCH_LIMITS_MARKS"] = str(marks)
    return env


@contextmanager
def workers(
    site: Site,
    schema: str,
    processes: int,
    concurrency: int,
    env: dict[str, str],
    options: Sequence[str] = (),
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`processes` workers of the limits app up and idle on `schema` (harness.py)."""
    with started_workers(
        site.url,
        schema,
        processes,
        app=APP,
        options=["--concurrency", str(concurrency), *options],
        env=env,
        settle=1.5,  # first claims (limits declared), first beats
    ) as started:
        yield started


# --- the tables ---------------------------------------------------------------------------


def micros(url: str, schema: str, task: str, columns: str) -> list[tuple[int, ...]]:
    """`columns` (timestamps) of `task`'s jobs in microseconds since the epoch, exactly."""
    query = sql.SQL("SELECT {} FROM {} WHERE task = %s ORDER BY id").format(
        sql.SQL(", ").join(
            sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(sql.Identifier(c))
            for c in columns.split(",")
        ),
        jobs_of(schema),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(row) for row in conn.execute(query, [task]).fetchall()]


# --- what the figures are made of -----------------------------------------------------------


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals [began, ended) that overlap at one moment (one that ends as
    another begins does not overlap it)."""
    events = sorted(
        [(ended, -1) for _, ended in intervals] + [(began, 1) for began, _ in intervals]
    )
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def most_in_window(moments: Sequence[int], width: int) -> int:
    """The most of `moments` in any window [t, t + width)."""
    ordered = sorted(moments)
    most = end = 0
    for start, moment in enumerate(ordered):
        while end < len(ordered) and ordered[end] < moment + width:
            end += 1
        most = max(most, end - start)
    return most


def worst_window(moments: Sequence[int], width: int) -> list[tuple[float, int]]:
    """The fullest window [t, t + width) of `moments`: (ms after t, how many) for each
    moment in it (a claim's jobs share one `started_at`)."""
    ordered = sorted(moments)
    best, first, end = 0, 0, 0
    for start, moment in enumerate(ordered):
        while end < len(ordered) and ordered[end] < moment + width:
            end += 1
        if end - start > best:
            best, first = end - start, start
    inside = ordered[first : first + best]
    counts: dict[int, int] = {}
    for moment in inside:
        counts[moment] = counts.get(moment, 0) + 1
    return [((moment - inside[0]) / 1000, count) for moment, count in sorted(counts.items())]


def read_marks(folder: Path) -> list[tuple[float, float]]:
    """(began, ended) of every run of `bench.slow`'s body, by the machine's clock."""
    runs = []
    for path in folder.glob("*.marks"):
        for line in path.read_text().splitlines():
            _, began, ended = line.split()
            runs.append((float(began), float(ended)))
    return runs


class RunningSampler:
    """Counts `task`'s running jobs every SAMPLE_EVERY seconds, on a thread: the most seen."""

    def __init__(self, url: str, schema: str, task: str) -> None:
        self.url = url
        self.schema = schema
        self.task = task
        self.most = 0
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            query = sql.SQL("SELECT count(*) FROM {} WHERE state = 'running' AND task = %s")
            running = query.format(live_of(conn, self.schema))  # running jobs are live
            while not self._done.wait(SAMPLE_EVERY):
                row = conn.execute(running, [self.task]).fetchone()
                self.most = max(self.most, row[0] if row else 0)
                self.samples += 1


# --- the measurements ---------------------------------------------------------------------


def limited_options(args: argparse.Namespace) -> list[str]:
    """The options of the limited tasks' workers."""
    return [] if args.poll_interval is None else ["--poll-interval", str(args.poll_interval)]


def served(
    site: Site, schema: str, args: argparse.Namespace, figures: Figures, prefix: str,
    counts: dict[str, int], *, split: bool = False,
) -> None:  # fmt: skip
    """`counts` ({task: jobs}) made due at once and drained by the limited tasks' workers
    (`--processes` x `--concurrency`); figures named `prefix` + what they are. `split`:
    each task's jobs in a queue of its own name, and half the processes serve
    `bench.rated`'s queue, the others `bench.slow`'s."""
    reset(site.url, schema)
    fill(site.url, schema, counts)
    groups = [(args.processes, limited_options(args))]
    if split:
        with psycopg.connect(site.url, autocommit=True) as conn:
            conn.execute(sql.SQL("UPDATE {} SET queue = task").format(live_of(conn, schema)))
        half = max(args.processes // 2, 1)
        groups = [
            (half, [*limited_options(args), "--queues", "bench.rated"]),
            (max(args.processes - half, 1), [*limited_options(args), "--queues", "bench.slow"]),
        ]
    marks = site.files / f"marks-{uuid.uuid4().hex[:8]}"
    marks.mkdir()
    env = environment(site, LIMITED, marks)
    with ExitStack() as stack:
        running = [
            process
            for processes, options in groups
            for process in stack.enter_context(
                workers(site, schema, processes, args.concurrency, env, options)
            )
        ]
        with RunningSampler(site.url, schema, "bench.slow") as sampler:
            make_due(site.url, [schema], first="bench.slow")
            wait_drained(site.url, schema, running, but_task="bench.rare")
    if slow := counts.get("bench.slow"):
        runs = read_marks(marks)
        assert len(runs) == slow, f"{len(runs)} runs of {slow} bench.slow jobs"
        figures.add(prefix + "slow bodies at once", most_at_once(runs))
        figures.add(prefix + "slow running sampled", sampler.most)
        figures.add(prefix + "slow samples", sampler.samples)
        rows = micros(site.url, schema, "bench.slow", "started_at,finished_at")
        intervals = [(float(s), float(f)) for s, f in rows]
        figures.add(prefix + "slow rows at once", most_at_once(intervals))
        figures.add(prefix + "slow rate", rate(site.url, schema, slow, "bench.slow"))
    if rated := counts.get("bench.rated"):
        starts = [row[0] for row in micros(site.url, schema, "bench.rated", "started_at")]
        assert len(starts) == rated, f"{len(starts)} starts of {rated} bench.rated jobs"
        most = most_in_window(starts, 1_000_000)
        figures.add(prefix + "rated window", most)
        if most > RATE:
            say(f"    {most} starts in 1 s, (ms, starts): {worst_window(starts, 1_000_000)}")
        first = min(starts)
        figures.add(prefix + "rated first second", sum(1 for s in starts if s < first + 1e6))
        figures.add(prefix + "rated rate", (rated - RATE) / ((max(starts) - first) / 1e6))
    if noop := counts.get("bench.noop"):
        figures.add(prefix + "noop", rate(site.url, schema, noop, "bench.noop"))


# A drain of plain jobs: its schema and whom its workers run as (LIMITED, UNLIMITED, BEFORE).
Drain = tuple[str, str]


def drain(site: Site, drains: list[Drain], args: argparse.Namespace) -> list[float]:
    """`--jobs` no-op jobs in each drain's schema, every drain at once (each with workers
    of its own, the jobs of all made due in one transaction): the jobs/s of each. A
    LIMITED drain has RARE_WAITING jobs of `bench.rare` beside its no-op jobs."""
    for schema, kind in drains:
        reset(site.url, schema)
        rare = {"bench.rare": RARE_WAITING} if kind == LIMITED else {}
        fill(site.url, schema, {"bench.noop": args.jobs} | rare)
    with ExitStack() as stack:
        running = [
            stack.enter_context(
                workers(
                    site,
                    schema,
                    args.drain_processes,
                    args.drain_concurrency,
                    environment(site, kind),
                )
            )
            for schema, kind in drains
        ]
        make_due(site.url, [schema for schema, _ in drains], first="bench.slow")
        for (schema, _), processes in zip(drains, running, strict=True):
            wait_drained(site.url, schema, processes, but_task="bench.rare")
    return [rate(site.url, schema, args.jobs, "bench.noop") for schema, _ in drains]


def measure(site: Site, args: argparse.Namespace, figures: Figures, name: str, number: int) -> None:
    """One measurement of round `number`."""
    one, other = site.pair if number % 2 == 0 else site.pair[::-1]
    if name == "concurrency":
        served(site, one, args, figures, "", {"bench.slow": args.slow, "bench.noop": args.jobs})
    elif name == "noop alone":
        served(site, one, args, figures, "alone ", {"bench.noop": args.jobs})
    elif name == "rated":
        served(site, one, args, figures, "", {"bench.rated": args.rated})
    elif name == "mixed":
        counts = {"bench.slow": args.slow, "bench.rated": args.rated, "bench.noop": args.jobs}
        served(site, one, args, figures, "mixed ", counts)
    elif name == "split":
        counts = {"bench.slow": args.slow, "bench.rated": args.rated}
        served(site, one, args, figures, "split ", counts, split=True)
    elif name == "plain":
        figures.add(name, *drain(site, [(one, UNLIMITED)], args))
    elif name == "limited":
        figures.add(name, *drain(site, [(one, LIMITED)], args))
    elif name == "limited vs plain":
        limited, plain = drain(site, [(one, LIMITED), (other, UNLIMITED)], args)
        figures.add(name, limited / plain)
    elif name == "before":
        assert site.before_schema is not None
        figures.add(name, *drain(site, [(site.before_schema, BEFORE)], args))
    elif name == "before vs plain":
        assert site.before_schema is not None
        plain, before = drain(site, [(one, UNLIMITED), (site.before_schema, BEFORE)], args)
        figures.add(name, before / plain)
    else:
        raise ValueError(name)


NAMES = [
    "concurrency", "noop alone", "rated", "mixed", "split", "plain", "limited", "limited vs plain",
    "before", "before vs plain",
]  # fmt: skip


def deadlocks(url: str) -> int:
    """The database's deadlocks so far (pg_stat_database)."""
    query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    return int(scalar(url, query))


def rounds(site: Site, args: argparse.Namespace, figures: Figures) -> None:
    """The measurements in a rotating order, round after round, and the deadlocks
    detected while each ran (its workers stopped, so their backends' counts are in)."""
    names = [n for n in NAMES if site.before_schema is not None or not n.startswith("before")]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    for number in range(args.rounds):
        say(f"round {number + 1} of {args.rounds}")
        turn = number % len(names)
        for name in names[turn:] + names[:turn]:
            started = time.monotonic()
            before = deadlocks(site.url)
            measure(site, args, figures, name, number)
            time.sleep(0.5)  # a backend's statistics are flushed as it exits
            figures.add(f"deadlocks {name}", deadlocks(site.url) - before)
            say(f"  {name}: {time.monotonic() - started:.1f}s")


# --- what one claim's statements cost (--explain) ------------------------------------------

EXECUTION = re.compile(r"Execution Time: ([0-9.]+) ms")
REMOVED = re.compile(r"Rows Removed by Filter: ([0-9]+)")


def analyzed(conn: psycopg.Connection[Any], statement: sql.Composable, params: Any) -> str:
    """EXPLAIN ANALYZE of `statement`, rolled back: its plan."""
    with conn.transaction(force_rollback=True):
        plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + statement, params)
        return "\n".join(line for (line,) in plan.fetchall())


def explain(site: Site, args: argparse.Namespace) -> list[tuple[int, list[float], list[int]]]:
    """For `--jobs` and ten times as many waiting plain jobs, with `bench.slow`'s bucket
    full (10 running, 20 waiting): the execution time (ms, median of 5) of LOCK_BUCKETS,
    CLAIM_LIMITED and the plain claim (`claim_jobs`, passing limited jobs over), as one
    claim of 16 by the worker sends them, and the most rows each removed by a filter."""
    from pgjobs.data.function_plans import explain_claim
    from pgjobs.data.layer import DataLayer
    from pgjobs.data.limits import FORMS
    from pgjobs.limits import TaskLimits

    schema = site.pair[0]
    layer = DataLayer(schema)
    limited_params = {
        "limit": 16,
        "queue": None,
        "locked": ["c:bench.slow"],
        "worker_id": "explain",
        "begin": 0,
    }
    plans: tuple[Callable[[psycopg.Connection[Any]], str], ...] = (
        lambda conn: analyzed(conn, layer.sql.render(FORMS["lock", True]), limited_params),
        lambda conn: analyzed(conn, layer.sql.render(FORMS["claim", True]), limited_params),
        lambda conn: "\n".join(
            line for (line,) in explain_claim(conn, schema, limit=16, options="ANALYZE, BUFFERS")
        ),
    )
    found = []
    for waiting in (args.jobs, args.jobs * 10):
        reset(site.url, schema)
        with psycopg.connect(site.url, autocommit=True) as conn:
            layer.limits.declare(conn, {"bench.slow": TaskLimits(concurrency=CONCURRENCY)})
            insert = sql.SQL(
                "INSERT INTO {} (task, payload, run_at) SELECT %s, jsonb_build_object('n', g),"
                " now() - %s * interval '1 second' FROM generate_series(1, %s) AS g"
            ).format(live_of(conn, schema))
            conn.execute(insert, ["bench.slow", 1, 30])
            conn.execute(insert, ["bench.noop", 0, waiting])
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(live_of(conn, schema)))
            held, _ = layer.limits.claim(conn, limit=16, queue=None, worker_id="explain")
            assert len(held) == CONCURRENCY, len(held)
            times: list[list[float]] = [[], [], []]
            removed = [0, 0, 0]
            for _ in range(5):
                for n, plan_of in enumerate(plans):
                    plan = plan_of(conn)
                    match = EXECUTION.search(plan)
                    assert match is not None, plan
                    times[n].append(float(match.group(1)))
                    removed[n] = max([removed[n], *map(int, REMOVED.findall(plan))])
        found.append((waiting, [statistics.median(t) for t in times], removed))
    return found


# --- pgjobs as it was (--before) ----------------------------------------------------------


# --- the report ---------------------------------------------------------------------------


def each(values: list[float]) -> str:
    """The most of the rounds, and every round's."""
    if not values:
        return ""
    return f"**{max(values):,.0f}** ({', '.join(f'{v:,.0f}' for v in values)})"


def report(figures: Figures, args: argparse.Namespace) -> str:
    lines = [
        "| measurement | figure | same-run baseline | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    g = figures.get

    def row(name: str, figure: list[float] | str, baseline: str = "-", over: float = 0) -> None:
        """A row when its figure was measured; `over`: its ratio's denominator."""
        if not figure:
            return
        shown = "-"
        if over == over and over and isinstance(figure, list):  # not nan, not 0
            shown = f"{median(figure) / over:.2f}x"
        if isinstance(figure, list):
            figure = spread(figure, 2 if max(figure) < 10 else 0)
        lines.append(f"| {name} | {figure} | {baseline} | {shown} |")

    def most(name: str) -> str:
        return each(g(name))

    workers_ = f"{args.processes} processes x {args.concurrency} threads"
    alone = g("alone noop")
    beside = f"alone on the same workers {spread(alone)}"
    split_ = (
        f"`split`: the `concurrency=10` task's {args.slow:,} jobs and the 200/s task's "
        f"{args.rated:,}, each in a queue served by half the processes"
    )
    for prefix, title in (
        ("", f"`concurrency=10` task ({args.slow:,} jobs of 50 ms), {workers_}"),
        ("mixed ", f"the same with the 200/s task's {args.rated:,} jobs at once"),
        ("split ", f"{split_}, the `concurrency=10` task"),
    ):
        row(f"{title}: most task bodies running at once", most(prefix + "slow bodies at once"),
            "limit 10")  # fmt: skip
        samples = median(g(prefix + "slow samples"))
        row(
            f"the same: most `running` in the table at once ({samples:,.0f} samples a round)",
            most(prefix + "slow running sampled") if samples else "", "limit 10",
        )  # fmt: skip
        row("the same: most `started_at`-`finished_at` intervals overlapping",
            most(prefix + "slow rows at once"), "limit 10")  # fmt: skip
        row("the same: its throughput, first claim to last outcome (jobs/s)",
            g(prefix + "slow rate"), "ideal 10 / 0.05 s = 200", 200)  # fmt: skip
        if prefix == "":
            row(f"{args.jobs:,} unlimited no-op jobs drained beside it, same workers (jobs/s)",
                g("noop"), beside, median(alone))  # fmt: skip
    for prefix, title in (
        ("", f'`rate_limit="200/s"` task ({args.rated:,} no-op jobs), {workers_}'),
        ("mixed ", "the same with the `concurrency=10` task's jobs at once"),
        ("split ", f"{split_}, the 200/s task"),
    ):
        row(f"{title}: most starts in any 1 s window", most(prefix + "rated window"), "limit 200")
        row("the same: starts in its first second", most(prefix + "rated first second"),
            "limit 200")  # fmt: skip
        row("the same: its rate, (jobs - 200) / first to last start (jobs/s)",
            g(prefix + "rated rate"), "limit 200", RATE)  # fmt: skip
    row(f"{args.jobs:,} unlimited no-op jobs drained beside both (jobs/s)", g("mixed noop"),
        beside, median(alone))  # fmt: skip
    drains = f"{args.drain_processes} processes x {args.drain_concurrency} threads"
    plain = g("plain")
    base = f"no limit {spread(plain)}" if plain else "-"
    row(f"drain {args.jobs:,} no-op jobs, no limit anywhere, {drains} (jobs/s)", plain)
    row(f"the same while a limited task exists ({RARE_WAITING} of its jobs waiting)",
        g("limited"), base, median(plain))  # fmt: skip
    row("the same head to head: limited ÷ no limit, each round's ratio",
        g("limited vs plain"), "-", 1)  # fmt: skip
    row(f"the plain drain served by pgjobs at {args.before}", g("before"), base, median(plain))
    row(f"the same head to head: {args.before} ÷ this tree without limits",
        g("before vs plain"), "-", 1)  # fmt: skip
    found = [(n, int(sum(g(f"deadlocks {n}")))) for n in NAMES if g(f"deadlocks {n}")]
    if found:
        text = ", ".join(f"{name} {count}" for name, count in found)
        row("deadlocks detected while each measurement ran, all rounds (pg_stat_database)",
            text)  # fmt: skip
    return "\n".join(lines)


def explain_report(found: list[tuple[int, list[float], list[int]]]) -> str:
    lines = [
        "| plain jobs waiting | LOCK_BUCKETS | CLAIM_LIMITED | plain CLAIM |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for waiting, times, removed in found:
        cells = " | ".join(
            f"{t:.2f} ms ({r:,} rows filtered out)" for t, r in zip(times, removed, strict=True)
        )
        lines.append(f"| {waiting:,} | {cells} |")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    from pgjobs.embedded import temporary_cluster
    from pgjobs.migrate import upgrade

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4, help="workers of the limited tasks")
    parser.add_argument("--concurrency", type=int, default=16, help="their threads")
    parser.add_argument("--slow", type=int, default=400, help="jobs of the concurrency=10 task")
    parser.add_argument("--rated", type=int, default=1000, help="jobs of the 200/s task")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs of a drain")
    parser.add_argument(
        "--poll-interval", type=float, help="the limited tasks' workers' (default: theirs)"
    )
    parser.add_argument("--drain-processes", type=int, default=2)
    parser.add_argument("--drain-concurrency", type=int, default=10)
    parser.add_argument("--before", help="a git revision to compare the plain drain with")
    parser.add_argument("--only", help="these measurements alone, e.g. 'limited vs plain'")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    figures = Figures()
    began = time.monotonic()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-limits-")))
        site = Site(url, (f"bench_lim_{run}", f"bench_lim_{run}_twin"), files)
        for schema in site.pair:
            upgrade(url, schema)
            stack.callback(drop, url, schema)
        if args.before:
            site.before_env = export_before(args.before, files / "before")
            site.before_schema = f"bench_lim_{run}_before"
            migrate(url, site.before_schema, site.before_env)
            stack.callback(drop, url, site.before_schema)
        version = scalar(url, "SHOW server_version")
        if args.rounds > 0:
            rounds(site, args, figures)
            print(
                f"pgjobs concurrency and rate limits, {args.rounds} rounds, PostgreSQL "
                f"{version}, {os.cpu_count()} cores, {time.monotonic() - began:.0f} s; "
                "throughputs: median (min-max) of the rounds; most at once: the most of "
                "the rounds (each round's)\n"
            )
            print(report(figures, args))
        if args.explain:
            say("explain")
            print(
                "\nOne claim of 16 while `bench.slow`'s bucket is full (10 running, 20 "
                "waiting): EXPLAIN ANALYZE, median of 5, rolled back\n"
            )
            print(explain_report(explain(site, args)))


if __name__ == "__main__":
    main()
