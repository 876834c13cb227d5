"""Workflows and stored results beside plain jobs, measured in one run.

    python bench/workflows.py [--database-url URL] [--rounds 3] [--processes 1,2]
                              [--steps 10000] [--chain 200] [--jobs 20000]
                              [--before REV] [--explain]

Real `pgjobs work` processes (`--concurrency 10`, the default) serve this file's App
(`workflows:app`, run from bench/). Each round takes, for each worker setting
(`--processes`: worker processes per drain), these measurements in a rotating order,
each with workers started for it and idle when it begins (`--rounds 0 --explain` skips
them and only explains):

- `plain`: `--jobs` no-op jobs, inserted due tomorrow, VACUUM ANALYZE'd, then made due in
  one transaction (which also wakes the workers): jobs over the window from the first
  claim to the last outcome, read from the table. The baseline of the other drains.
- `stored`: the same drain of a task declared `store_result=True` (it returns its
  argument, so each completion writes a result).
- `stored vs plain`: both at once, head to head, each with its own workers in a schema
  of its own (the two schemas swap roles between rounds): their ratio. Both meet the same
  machine at the same moment, so on a noisy machine this ratio is the steadier figure.
- `before` and `before vs plain` (with `--before REV`, e.g. HEAD): the plain drain served
  by pgjobs at that git revision (its `pgjobs/` and `migrations/` exported with
  `git archive` into a temporary folder, on a schema its own migrations made), alone and
  head to head with this tree's: whether plain jobs drain as they did.
- `workflow`: a fan-out/fan-in of `--steps` steps (one root, all but two after the
  root, one sink after all of those), built in Python and enqueued in one statement
  while the workers wait, its root due tomorrow; then VACUUM ANALYZE and the root made
  due, as for the plain drains. Steps over the window from the root's claim to the sink's
  outcome; the middle steps alone (first claim to last outcome); the root's release of
  its dependents (its finished_at, the start of the statement that records it and
  releases them, to the first dependent's started_at); the fan-in (the last middle
  step's finished_at to the sink's started_at); and the enqueue, beside `enqueue_many` of
  as many plain jobs (no worker running).

Then, once per round, on one idle worker process: dependent-release latency, a chain of
`--chain` + 1 steps run one after another, beside the plain pickup latency of as many
jobs enqueued one at a time (each in its own autocommit statement, after the previous
one ran and a 50 ms pause). Two views of each:

- `task`: as the task sees it, wall clock: a step's return to the next one's start (the
  worker's outcome batching is in it); for a plain job, the enqueue's commit returning
  to the producer to the task's start;
- `table`: from the rows, server clock: a step's finished_at to the dependent's
  started_at (its claim); for a plain job its created_at (the start of the enqueue
  statement) to its started_at.

`--explain` then looks at where the fan-out's time goes, untimed: auto_explain (when the
server has it; the bundled PostgreSQL does not, `PGJOBS_PG_BINDIR` picks other server
binaries) of a plain batch's outcome, of the enqueue statement, of the root's completion
and of a batch of 100 middle steps (the worker's own claim and outcome statements, run
by hand), settle_steps' statements included; EXPLAIN ANALYZE of settle_steps' statement
for the root, by hand (its text read from the server), on any server; and a drain with
two worker processes while pg_stat_activity is sampled for lock waits (the sink's row is
updated by every batch of middle steps).

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schemas are dropped either way.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import psycopg
from harness import (
    STARTUP_TIMEOUT,
    drop,
    export_before,
    fill,
    make_due,
    median,
    migrate,
    rate,
    reset,
    say,
    scalar,
    spread,
    started_workers,
    vacuum,
)
from psycopg import sql

import pgjobs

app = pgjobs.App()
MARKS = os.environ.get("BENCH_WORKFLOW_MARKS")
_marks_lock = threading.Lock()


@app.task(name="bench.noop")
def noop(n: int = 0) -> None:
    """The plain drain's job."""


@app.task(name="bench.step")
def step(n: int = 0) -> None:
    """A fan-out step: nothing to do, nothing stored."""


@app.task(name="bench.marked")
def marked(n: int) -> None:
    """A latency sample: records when it started and when it returned."""
    started = time.time()
    if MARKS:
        with _marks_lock, open(MARKS, "a") as marks:
            marks.write(f"{n} {started:.6f} {time.time():.6f}\n")


try:  # pgjobs before results (`--before`) serves the others only

    @app.task(name="bench.stored", store_result=True)
    def stored(n: int = 0) -> int:
        """The store_result drain's job."""
        return n

except TypeError:
    pass


# --- measuring (the script's side; the workers import only the App above) ----------------

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = "workflows:app"
DRAIN_TIMEOUT = 600.0
PAUSE = 0.05  # between two plain latency samples: the worker is idle again
CHAIN_FIRST = 1_000_000  # the chain's marks are numbered from here, plain jobs' from 0
Connection = psycopg.Connection[Any]


@dataclass
class Site:
    """Where the run happens: the server, this tree's schema (and a twin, for drains head
    to head), and the `--before` one."""

    url: str
    schema: str
    twin: str
    before_schema: str | None = None
    before_env: dict[str, str] | None = None


@dataclass
class Figures:
    """Every sample, by (measurement, setting)."""

    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, name: str, setting: str, *values: float) -> None:
        self.samples.setdefault((name, setting), []).extend(values)

    def get(self, name: str, setting: str) -> list[float]:
        return self.samples.get((name, setting), [])


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


# --- workers ------------------------------------------------------------------------------


@contextmanager
def workers(
    site: Site,
    schema: str,
    processes: int,
    *,
    env: dict[str, str] | None = None,
    marks: Path | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`processes` workers of the workflows app up and idle on `schema` (harness.py)."""
    environment = dict(os.environ if env is None else env)
    if marks is not None:
        environment["BENCH_WORKFLOW_MARKS"] = str(marks)
    with started_workers(site.url, schema, processes, app=APP, env=environment) as started:
        yield started


def wait_drained(site: Site, schema: str, running: list[subprocess.Popen[bytes]]) -> None:
    """Until no job of `schema` waits, is blocked or runs (harness.py)."""
    harness.wait_drained(site.url, schema, running, blocked=True, timeout=DRAIN_TIMEOUT, every=0.05)


# --- the tables ---------------------------------------------------------------------------


# --- the drains ---------------------------------------------------------------------------


# A drain: the schema, the task of its jobs, the environment of its workers (None: this
# tree's pgjobs; `Site.before_env`: pgjobs at --before).
Drain = tuple[str, str, "dict[str, str] | None"]


def drain(site: Site, drains: list[Drain], count: int, processes: int) -> list[float]:
    """`count` jobs of each drain, every drain at once (each with `processes` workers of
    its own, the jobs of all made due in one transaction): the jobs/s of each."""
    for schema, task, _ in drains:
        reset(site.url, schema)
        fill(site.url, schema, {task: count})
    with ExitStack() as stack:
        running = [
            stack.enter_context(workers(site, schema, processes, env=env))
            for schema, _, env in drains
        ]
        make_due(site.url, [schema for schema, _, _ in drains])
        for (schema, _, _), processes_ in zip(drains, running, strict=True):
            wait_drained(site, schema, processes_)
    return [rate(site.url, schema, count) for schema, _, _ in drains]


def fan_out(steps: int, app_: pgjobs.App, *, root_delay: float = 0) -> pgjobs.Workflow:
    """One root (due after `root_delay` seconds), `steps - 2` steps after it, a sink after
    all of those."""
    workflow = pgjobs.Workflow("fan-out", app=app_)
    root = workflow.add("bench.step", name="root", options={"delay": root_delay})
    middle = [workflow.add("bench.step", name=f"s{n}", after=[root], n=n) for n in range(steps - 2)]
    workflow.add("bench.step", name="sink", after=middle)
    return workflow


FAN_OUT_TIMES = """
SELECT extract(epoch FROM r.started_at), extract(epoch FROM r.finished_at),
       extract(epoch FROM m.first_started), extract(epoch FROM m.last_finished),
       extract(epoch FROM s.started_at), extract(epoch FROM s.finished_at),
       (SELECT count(*) FROM {jobs} WHERE state = 'completed')
FROM {jobs} AS r, {jobs} AS s,
     (SELECT min(started_at) AS first_started, max(finished_at) AS last_finished
      FROM {jobs} WHERE step NOT IN ('root', 'sink')) AS m
WHERE r.step = 'root' AND s.step = 'sink'
"""


def workflow_drain(site: Site, steps: int, processes: int, figures: Figures, setting: str) -> None:
    """Enqueue the fan-out with the workers waiting, its root due tomorrow; then, as for
    the plain drains, fresh statistics and a checkpoint, and the root made due."""
    reset(site.url, site.schema)
    jobs = table(site.schema, "jobs")
    app_ = pgjobs.App(site.url, schema=site.schema)
    try:
        started = time.perf_counter()
        workflow = fan_out(steps, app_, root_delay=86_400)
        built = time.perf_counter()
        with workers(site, site.schema, processes) as running:
            with psycopg.connect(site.url) as conn:
                sent = time.perf_counter()
                workflow.enqueue(conn)
                enqueued = time.perf_counter()
                conn.commit()
                committed = time.perf_counter()
                conn.autocommit = True
                vacuum(conn, site.schema)
                conn.execute("CHECKPOINT")
            make_due(site.url, [site.schema])
            wait_drained(site, site.schema, running)
    finally:
        app_.close()
    query = sql.SQL(FAN_OUT_TIMES).format(jobs=jobs)
    row = psycopg.connect(site.url, autocommit=True).execute(query).fetchone()
    assert row is not None and row[6] == steps, f"{row[6] if row else 0} of {steps} completed"
    root_started, root_finished, first, last, sink_started, sink_finished, _ = map(float, row)
    figures.add("workflow build", setting, built - started)
    figures.add("workflow enqueue", setting, enqueued - sent)
    figures.add("workflow commit", setting, committed - enqueued)
    figures.add("workflow drain", setting, steps / (sink_finished - root_started))
    figures.add("middle drain", setting, (steps - 2) / (last - first))
    figures.add("root release", setting, (first - root_finished) * 1000)
    figures.add("fan-in release", setting, (sink_started - last) * 1000)


def bulk_enqueue(site: Site, count: int) -> float:
    """Seconds for `enqueue_many` of `count` plain jobs and its commit (no worker)."""
    reset(site.url, site.schema)
    app_ = pgjobs.App(site.url, schema=site.schema)
    items = [("bench.noop", {"n": n}) for n in range(count)]
    try:
        with psycopg.connect(site.url) as conn:
            started = time.perf_counter()
            app_.enqueue_many(conn, items)
            conn.commit()
            return time.perf_counter() - started
    finally:
        app_.close()


# --- latency ------------------------------------------------------------------------------


def read_marks(path: Path) -> dict[int, tuple[float, float]]:
    """n -> (the task's start, its return), wall clock."""
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().split("\n")[:-1]:  # a line being written has no "\n" yet
        n, started, returned = line.split()
        found[int(n)] = (float(started), float(returned))
    return found


def wait_mark(path: Path, n: int, running: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while n not in read_marks(path):
        if any(p.poll() is not None for p in running) or time.monotonic() > deadline:
            raise RuntimeError(f"sample {n} did not run")
        time.sleep(0.001)


STEP_TIMES = """
SELECT (payload->>'n')::bigint, extract(epoch FROM created_at), extract(epoch FROM started_at),
       extract(epoch FROM finished_at)
FROM {jobs} WHERE task = 'bench.marked' ORDER BY id
"""


def latency(site: Site, samples: int, files: Path, figures: Figures) -> None:
    """Plain pickup, then the chain's dependent release, on one idle worker process."""
    reset(site.url, site.schema)
    marks = files / f"marks-{uuid.uuid4().hex[:8]}"
    app_ = pgjobs.App(site.url, schema=site.schema)
    commits: dict[int, float] = {}
    try:
        with (
            workers(site, site.schema, 1, marks=marks) as running,
            psycopg.connect(site.url, autocommit=True) as conn,
        ):
            for n in range(samples + 1):  # the first is a warm-up
                app_.enqueue(conn, "bench.marked", {"n": n})
                commits[n] = time.time()
                wait_mark(marks, n, running)
                time.sleep(PAUSE)
            chain = pgjobs.Workflow("chain", app=app_)
            previous: list[pgjobs.Step] = []
            for n in range(CHAIN_FIRST, CHAIN_FIRST + samples + 1):
                previous = [chain.add("bench.marked", name=f"c{n}", after=previous, n=n)]
            chain.enqueue(conn)
            wait_mark(marks, CHAIN_FIRST + samples, running)
            wait_drained(site, site.schema, running)
    finally:
        app_.close()
    rows = (
        psycopg.connect(site.url, autocommit=True)
        .execute(sql.SQL(STEP_TIMES).format(jobs=table(site.schema, "jobs")))
        .fetchall()
    )
    times = {int(n): (float(c), float(s), float(f)) for n, c, s, f in rows}
    ran = read_marks(marks)
    plain = range(1, samples + 1)
    figures.add("plain table", "", *((times[n][1] - times[n][0]) * 1000 for n in plain))
    figures.add("plain task", "", *((ran[n][0] - commits[n]) * 1000 for n in plain))
    chain_ = range(CHAIN_FIRST, CHAIN_FIRST + samples)
    figures.add("chain table", "", *((times[n + 1][1] - times[n][2]) * 1000 for n in chain_))
    figures.add("chain task", "", *((ran[n + 1][0] - ran[n][1]) * 1000 for n in chain_))
    figures.add("chain batching", "", *((times[n][2] - ran[n][1]) * 1000 for n in chain_))


# --- pgjobs as it was (--before) ----------------------------------------------------------


# --- the report ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] if ordered else float("nan")


def report(figures: Figures, args: argparse.Namespace, settings: list[int]) -> str:
    lines = [
        "| measurement | figure | same-run baseline | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]

    def row(name: str, figure: str, baseline: str, ratio: float | None) -> None:
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {name} | {figure} | {baseline} | {shown} |")

    jobs, steps = f"{args.jobs:,}", f"{args.steps:,}"
    for processes in settings:
        s = f"{processes} process" + "es" * (processes > 1)
        plain = figures.get("plain", s)
        base = f"plain {spread(plain)}"
        row(f"drain {jobs} plain no-op jobs, {s} (jobs/s)", spread(plain), "-", None)
        if before := figures.get("before", s):
            row(
                f"drain {jobs} plain no-op jobs, pgjobs at {args.before}, {s} (jobs/s)",
                spread(before), base, median(before) / median(plain),
            )  # fmt: skip
        if pairs := figures.get("before vs plain", s):
            row(
                f"the same head to head with this tree's, {s} each: the rounds' ratios",
                spread(pairs, 2), "-", median(pairs),
            )  # fmt: skip
        stored_ = figures.get("stored", s)
        row(
            f"drain {jobs} `store_result=True` jobs, {s} (jobs/s)",
            spread(stored_), base, median(stored_) / median(plain),
        )  # fmt: skip
        if pairs := figures.get("stored vs plain", s):
            row(
                f"the same head to head with plain jobs, {s} each: the rounds' ratios",
                spread(pairs, 2), "-", median(pairs),
            )  # fmt: skip
        drained = figures.get("workflow drain", s)
        row(
            f"fan-out/fan-in of {steps} steps: drain, root claimed to sink done, {s} (steps/s)",
            spread(drained), base, median(drained) / median(plain),
        )  # fmt: skip
        row(
            f"the same: root's outcome to its first dependent's claim, {s} (ms)",
            spread(figures.get("root release", s), 1), "-", None,
        )  # fmt: skip
        middle = figures.get("middle drain", s)
        row(
            f"the same: the {args.steps - 2:,} middle steps alone, first claim to last outcome,"
            f" {s} (steps/s)",
            spread(middle), base, median(middle) / median(plain),
        )  # fmt: skip
        row(
            f"the same: last middle step's outcome to the sink's claim, {s} (ms)",
            spread(figures.get("fan-in release", s), 1), "-", None,
        )  # fmt: skip
    build = [
        v for s in settings for v in figures.get("workflow build", f"{s} process" + "es" * (s > 1))
    ]
    sent = [
        v
        for s in settings
        for v in figures.get("workflow enqueue", f"{s} process" + "es" * (s > 1))
    ]
    commit = [
        v for s in settings for v in figures.get("workflow commit", f"{s} process" + "es" * (s > 1))
    ]
    bulk = figures.get("bulk", "")
    row(f"fan-out/fan-in of {steps} steps: building it in Python (s)", spread(build, 3), "-", None)
    row(
        "the same: `enqueue`, one statement, and its commit (s)",
        spread([a + b for a, b in zip(sent, commit, strict=True)], 3),
        f"`enqueue_many` of {steps} plain jobs {spread(bulk, 3)}",
        median([a + b for a, b in zip(sent, commit, strict=True)]) / median(bulk),
    )  # fmt: skip

    def p50_95(values: list[float]) -> str:
        return f"{percentile(values, 50):.2f} / {percentile(values, 95):.2f}"

    def ratios(values: list[float], baseline: list[float]) -> str:
        return " / ".join(
            f"{percentile(values, p) / percentile(baseline, p):.2f}x" for p in (50, 95)
        )

    latency_rows = (
        ("task", "a step's return to its dependent's start", "commit returned to the task's start"),
        ("table", "finished_at to the dependent's started_at", "created_at to started_at"),
    )
    for view, chained, picked_up in latency_rows:
        chain_, plain_ = figures.get(f"chain {view}", ""), figures.get(f"plain {view}", "")
        lines.append(
            f"| chain of {args.chain + 1} steps: {chained}, p50 / p95 (ms) | {p50_95(chain_)} "
            f"| plain job: {picked_up} {p50_95(plain_)} | {ratios(chain_, plain_)} |"
        )
    batching = figures.get("chain batching", "")
    row(
        "the same: a step's return to its outcome's statement (finished_at), p50 / p95 (ms)",
        p50_95(batching), "-", None,
    )  # fmt: skip
    return "\n".join(lines)


# --- where the fan-out's time goes (--explain) ---------------------------------------------

AUTO_EXPLAIN = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_buffers = on",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_level = notice",
)
ACTIVITY = """
SELECT wait_event_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND application_name LIKE %s
"""


def explained(conn: Connection) -> list[str]:
    """Turn auto_explain on for `conn` (plans come back as notices, collected in the list
    returned); an empty list that stays empty when the server lacks it."""
    plans: list[str] = []
    try:
        for statement in AUTO_EXPLAIN:
            conn.execute(statement)
    except psycopg.Error as error:
        say(f"auto_explain is not available ({error}); plans are not shown")
        return plans
    conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    return plans


def show(title: str, plans: list[str], seconds: float) -> None:
    """What `title` ran, each statement's duration and plan; then forget them."""
    print(f"\n### {title}: {seconds * 1000:.1f} ms from the client\n")
    for plan in plans:
        print(plan.rstrip() + "\n")
    plans.clear()


def explain_settle(site: Site, finished: list[int], outcomes: list[str]) -> str:
    """EXPLAIN ANALYZE of the statement inside `settle_steps` (its source read from the
    server) for these finished jobs, as its first (custom-planned) call would run it;
    rolled back. Needs no auto_explain."""
    signature = f"{sql.Identifier(site.schema).as_string()}.settle_steps(bigint[], text[])"
    with psycopg.connect(site.url) as conn:
        source = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", [signature]
        ).fetchone()
        assert source is not None
        body: str = source[0]
        start = body.index("WITH parents AS")
        into = body.index("INTO cancelled", start)
        tail = body.index("FROM changed", into)
        query = (body[start:into] + body[tail : body.index(";", tail)]).replace("%", "%%")
        query = query.replace(
            "unnest(finished, outcomes)", "unnest(%(finished)s::bigint[], %(outcomes)s::text[])"
        )
        plan = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) " + query, {"finished": finished, "outcomes": outcomes}
        ).fetchall()
        conn.rollback()
    return "\n".join(line for (line,) in plan)


def explain(site: Site, steps: int) -> None:
    """auto_explain of the fan-out's enqueue, of a plain batch's and a step batch's
    outcome, and of the root's; then lock waits sampled during a real drain."""
    from pgjobs.data.layer import DataLayer
    from pgjobs.worker.outcomes import completed

    reset(site.url, site.schema)
    claims = DataLayer(site.schema).claims
    worker = f"bench-explain-{uuid.uuid4().hex[:8]}"
    app_ = pgjobs.App(site.url, schema=site.schema)
    version = scalar(site.url, "SHOW server_version")
    print(f"\n## Where the fan-out's time goes (PostgreSQL {version}; auto_explain's")
    print("times include its own overhead)")
    with (
        closing(app_),
        psycopg.connect(site.url, autocommit=True) as conn,
    ):
        plans = explained(conn)

        def batch(title: str, size: int) -> None:
            claimed, _ = claims.claim(conn, limit=size, queue=None, worker_id=worker, begin=size)
            plans.clear()
            started = time.perf_counter()
            claims.record_outcomes(conn, [completed(job) for job in claimed], worker_id=worker)
            show(f"{title} ({len(claimed)} jobs)", plans, time.perf_counter() - started)

        app_.enqueue_many(conn, [("bench.noop", {"n": n}) for n in range(100)])
        batch("outcome of a batch of plain jobs", 100)
        workflow = fan_out(steps, app_)
        plans.clear()
        started = time.perf_counter()
        with conn.transaction():
            workflow.enqueue(conn)
        show(
            f"enqueue of the {steps:,}-step fan-out and its commit",
            plans,
            time.perf_counter() - started,
        )
        # Fresh statistics, as the timed drain has them.
        vacuum(conn, site.schema)
        plans.clear()
        root = workflow.steps[0].job_id
        assert root is not None
        print("\n### settle_steps' statement for the root, EXPLAIN ANALYZE by hand, rolled back\n")
        print(explain_settle(site, [root], ["completed"]))
        batch("outcome of the root (releases its dependents)", 1)
        batch("outcome of a batch of middle steps (counted off the sink)", 100)
    print(f"\n## Lock waits while 2 worker processes drain the {steps:,}-step fan-out's")
    print("middle steps and its fan-in (from the root's release on)\n")
    reset(site.url, site.schema)
    waits = sample_drain(site, steps)
    active = sum(waits.values())
    print(f"{active:,} samples of the workers' active backends (every 2 ms):")
    for (kind, query), count in sorted(waits.items(), key=lambda item: -item[1]):
        print(f"  {count / active:6.1%}  {kind:30}  {query}")


def sample_drain(site: Site, steps: int) -> dict[tuple[str, str], int]:
    """Drain the fan-out with two worker processes, as the timed drain does, sampling
    pg_stat_activity from the root's release on (the middle steps and the fan-in):
    (what each active backend waited on, its statement's start) -> samples."""
    from pgjobs.worker.connection import APPLICATION_NAME_PREFIX

    workers_named = APPLICATION_NAME_PREFIX + "%"
    counts: dict[tuple[str, str], int] = {}
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(site.url, autocommit=True) as conn:
            while not done.wait(0.002):
                for kind, event, query in conn.execute(ACTIVITY, [workers_named]).fetchall():
                    key = (f"{kind}:{event}" if kind else "running", query)
                    counts[key] = counts.get(key, 0) + 1

    jobs = table(site.schema, "jobs")
    released = sql.SQL("SELECT count(*) FROM {} WHERE state <> 'blocked' AND step <> 'root'")
    app_ = pgjobs.App(site.url, schema=site.schema)
    with closing(app_), workers(site, site.schema, 2) as running:
        workflow = fan_out(steps, app_, root_delay=86_400)
        with psycopg.connect(site.url, autocommit=True) as conn:
            with conn.transaction():
                workflow.enqueue(conn)
            vacuum(conn, site.schema)
            make_due(site.url, [site.schema])
            while not (conn.execute(released.format(jobs)).fetchone() or (0,))[0]:
                time.sleep(0.01)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            wait_drained(site, site.schema, running)
        finally:
            done.set()
            sampler.join()
    return counts


# --- the run ------------------------------------------------------------------------------


def label(processes: int) -> str:
    return f"{processes} process" + "es" * (processes > 1)


def measure(
    site: Site, args: argparse.Namespace, figures: Figures, name: str, n: int, number: int
) -> None:
    """One measurement of round `number`, with `n` worker processes per drain."""
    s = label(n)
    # Head to head, the schemas swap roles between rounds.
    one, other = (site.schema, site.twin) if number % 2 == 0 else (site.twin, site.schema)
    if name in ("plain", "stored"):
        task = "bench.noop" if name == "plain" else "bench.stored"
        figures.add(name, s, *drain(site, [(one, task, None)], args.jobs, n))
    elif name == "before":
        assert site.before_schema is not None
        before = (site.before_schema, "bench.noop", site.before_env)
        figures.add(name, s, *drain(site, [before], args.jobs, n))
    elif name == "stored vs plain":
        plain, stored_ = drain(
            site, [(one, "bench.noop", None), (other, "bench.stored", None)], args.jobs, n
        )
        figures.add(name, s, stored_ / plain)
    elif name == "before vs plain":
        assert site.before_schema is not None
        before = (site.before_schema, "bench.noop", site.before_env)
        plain, before_rate = drain(site, [(one, "bench.noop", None), before], args.jobs, n)
        figures.add(name, s, before_rate / plain)
    else:
        workflow_drain(site, args.steps, n, figures, s)


def rounds(site: Site, args: argparse.Namespace, figures: Figures, files: Path) -> None:
    """The drains in a rotating order, each setting in turn; then the latencies."""
    names = ["plain", "stored", "workflow", "stored vs plain"]
    if site.before_schema is not None:
        names += ["before", "before vs plain"]
    for number in range(args.rounds):
        say(f"round {number + 1} of {args.rounds}")
        figures.add("bulk", "", bulk_enqueue(site, args.steps))
        for processes in settings(args):
            turn = number % len(names)
            for name in names[turn:] + names[:turn]:
                started = time.monotonic()
                measure(site, args, figures, name, processes, number)
                say(f"  {label(processes)}, {name}: {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        latency(site, args.chain, files, figures)
        say(f"  latency: {time.monotonic() - started:.1f}s")


def settings(args: argparse.Namespace) -> list[int]:
    return [int(n) for n in args.processes.split(",")]


def main() -> None:
    from pgjobs.embedded import temporary_cluster
    from pgjobs.migrate import upgrade

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", default="1,2", help="worker settings, e.g. 1,2")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--before", help="a git revision to compare the plain drain with")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    figures = Figures()
    began = time.monotonic()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-wf-")))
        site = Site(url, f"bench_wf_{run}", f"bench_wf_{run}_twin")
        for schema in (site.schema, site.twin):
            upgrade(url, schema)
            stack.callback(drop, url, schema)
        if args.before:
            site.before_env = export_before(args.before, files / "before")
            site.before_schema = f"bench_wf_{run}_before"
            migrate(url, site.before_schema, site.before_env)
            stack.callback(drop, url, site.before_schema)
        version = scalar(url, "SHOW server_version")
        if args.rounds > 0:
            rounds(site, args, figures, files)
            print(
                f"pgjobs workflows and results, {args.rounds} rounds, PostgreSQL {version}, "
                f"{os.cpu_count()} cores, {time.monotonic() - began:.0f} s; drains: median "
                f"(min-max) of the rounds; latency: {args.chain} samples a round, pooled\n"
            )
            print(report(figures, args, settings(args)))
        if args.explain:
            explain(site, args.steps)


if __name__ == "__main__":
    main()
