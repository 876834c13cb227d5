"""A large history beside a steady flow of jobs: what it costs the hot path, and what a
retention pass costs (issue 28).

    python bench/history.py [--database-url URL] [--jobs 10000000] [--seconds 180]
                            [--rate 1000] [--producers 8] [--rounds 2] [--warmup 5]
                            [--explain]

Two schemas, migrated alike: `empty` (no history) and `kept`, whose `jobs_history` is
loaded with `--jobs` finished jobs spread evenly over the 10 UTC days that end at the
start of today (ids in the order they finished; 90% completed, 8% failed after three
attempts with a short `errors` entry for each, 2% cancelled; arguments `{"n": id}`):
each day's partitions made first by `jobs_history_partition`, the rows inserted straight
into `jobs_history` (not through the `jobs` view) by `INSERT ... SELECT generate_series`
in chunks of a million, then VACUUM ANALYZE and a checkpoint.

Then the same steady load runs on each schema in turn (`--rounds` rounds, the order
alternated between rounds, a CHECKPOINT before each run; autovacuum is left to itself):

- `--producers` threads enqueue single jobs with `app.enqueue(None, "noop", {"n": n})`
  (the App's own pool: one transaction each), `--rate` jobs/s between them, each enqueue
  scheduled at an absolute time (a late one does not push the next ones back); each call
  is timed. (One thread, one commit after the other, made 584-749 jobs/s on 2 cores
  with fsync on: every enqueue's commit holds PostgreSQL's cluster-wide NOTIFY lock
  until its WAL is flushed. Hence several, as several web processes would enqueue.)
- a consumer does what a worker's fetcher and outcome writer do, through the data
  layer, on one autocommit connection made as the worker makes its own: a claim of up to
  50 jobs (`claims.claim`; 2 ms of sleep after one that found nothing), then their
  completion (`claims.record_outcomes`, COMPLETE_JOBS: each row deleted from `jobs_live`
  and inserted into today's history partition, in one statement). Claims that returned
  jobs and the completions are timed; empty claims are counted apart.

Each run is `--warmup` seconds untimed, then `--seconds` timed; samples are kept for the
calls that began in the timed window. Read too: the jobs enqueued and completed per
second over the window, and `jobs_live`'s size and dead tuples at its start and end
(and the most seen, sampled every second), with the autovacuums and autoanalyzes of
`jobs_live` meanwhile and of the schema's other tables (pg_stat_user_tables); and the
machine's load average and the CPU that other work on the machine used meanwhile (its
busy time in /proc/stat less this process's and the server's, when the server runs
here: a check that a run was not disturbed).

Then, on `kept`, under the same load (a run that lasts until the pass is done): retention
drops the oldest day's completed partition (`pgjobs.history.drop_expired`, a retention
that expires exactly that day: DETACH CONCURRENTLY and DROP), and, for contrast, the next
day's completed partition is emptied row by row, as the prune before history partitions
did (its statement: batches of 10,000 ids picked by `finished_at`, FOR UPDATE SKIP
LOCKED, deleted by id, each batch its own transaction). Each is timed, with the rows it
removed and the dead tuples left in `jobs_live` and in the history's partitions.

`--explain` ends with EXPLAIN (ANALYZE, BUFFERS) of one claim and one completion on each
schema (in a transaction rolled back), for when the two differ.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schemas are dropped either way.
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from harness import drop, say, scalar
from psycopg import sql

import pgjobs
from pgjobs.data.function_plans import explain_claim
from pgjobs.history import drop_expired
from pgjobs.types import JobState, Outcome

DAYS = 10
CHUNK = 1_000_000  # rows per INSERT of the load
CLAIM_LIMIT = 50
EMPTY_SLEEP = 0.002  # seconds the consumer sleeps after a claim that found nothing
WORKER = "bench"
PRUNE_BATCH = 10_000  # the prune before history partitions deleted as many per batch
STATS_FLUSH = 1.5  # seconds for a backend's table counters to reach pg_stat_user_tables
LEAD = 5.0  # seconds of steady load before and after the retention pass
STATES = ("completed", "failed", "cancelled")
KINDS = ("enqueue", "claim", "complete")

# Row g finished at `first` + (g - 0.5) * span / jobs: ids follow the finishing order.
LOAD = """
INSERT INTO {history} (id, queue, task, payload, state, priority, attempts, max_attempts,
                       run_at, created_at, started_at, finished_at, errors, worker_id)
SELECT g, 'default', (ARRAY['email.send', 'webhook.deliver', 'image.resize',
                            'report.build'])[1 + g %% 4],
       jsonb_build_object('n', g), state, 0,
       CASE state WHEN 'completed' THEN 1 WHEN 'failed' THEN 3 ELSE 0 END, 3,
       finished - wait - run, finished - wait - run,
       CASE WHEN state <> 'cancelled' THEN finished - run END, finished,
       CASE WHEN state = 'failed' THEN jsonb_build_array(
           jsonb_build_object('attempt', 1, 'at', finished - interval '90 s',
                              'error', 'TimeoutError: no answer within 10 s'),
           jsonb_build_object('attempt', 2, 'at', finished - interval '40 s',
                              'error', 'TimeoutError: no answer within 10 s'),
           jsonb_build_object('attempt', 3, 'at', finished,
                              'error', 'ConnectionRefusedError: [Errno 111]'))
            ELSE '[]'::jsonb END,
       CASE WHEN state <> 'cancelled' THEN 'web-' || (1 + g %% 4) || ':4100' END
FROM (SELECT g, %(first)s::timestamptz + (g - 0.5) * %(span)s::interval / %(jobs)s AS finished,
             CASE WHEN g %% 50 < 45 THEN 'completed' WHEN g %% 50 < 49 THEN 'failed'
                  ELSE 'cancelled' END AS state,
             make_interval(secs => (g %% 997) / 1000.0) AS run,
             make_interval(secs => (g %% 1999) / 1000.0) AS wait
      FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g) AS s
"""
# jobs_live's size, dead tuples, autovacuums and autoanalyzes; those of the schema's
# other tables (the history's partitions among them).
LIVE_STATS = """
SELECT sum(pg_total_relation_size(relid)) FILTER (WHERE relname = 'jobs_live'),
       sum(n_dead_tup) FILTER (WHERE relname = 'jobs_live'),
       sum(autovacuum_count) FILTER (WHERE relname = 'jobs_live'),
       sum(autoanalyze_count) FILTER (WHERE relname = 'jobs_live'),
       sum(autovacuum_count + autoanalyze_count) FILTER (WHERE relname <> 'jobs_live')
FROM pg_stat_user_tables WHERE schemaname = %s
"""
HISTORY_STATS = """
SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint,
       coalesce(sum(s.n_dead_tup), 0)::bigint
FROM pg_partition_tree(%s::regclass) AS t
LEFT JOIN pg_stat_user_tables AS s ON s.relid = t.relid
"""
# The prune before history partitions (PRUNE_FINISHED), on one partition.
PRUNE = """
WITH batch AS (
    SELECT id FROM {partition} WHERE finished_at < %s LIMIT %s FOR UPDATE SKIP LOCKED
)
DELETE FROM {partition} AS j USING batch WHERE j.id = batch.id
"""


@dataclass
class Run:
    """One steady run's samples (seconds) and readings."""

    label: str
    enqueue: list[float] = field(default_factory=list)
    claim: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)
    empty_claims: int = 0
    completed: int = 0
    seconds: float = 0.0
    load: float = 0.0  # the machine's load average (1 minute) at the window's end
    others: float = math.nan  # CPU cores the rest of the machine used meanwhile
    live: dict[str, tuple[int, ...]] = field(default_factory=dict)  # start, end, most

    def rate(self, samples: list[float] | int) -> float:
        count = samples if isinstance(samples, int) else len(samples)
        return count / self.seconds if self.seconds else float("nan")


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection like the worker's own (no prepared statements)."""
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, in milliseconds."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] * 1000 if ordered else math.nan


def load(url: str, schema: str, jobs: int) -> None:
    """Fill `schema`'s history as the docstring says."""
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=DAYS)
    history = sql.Identifier(schema, "jobs_history")
    make = sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier(schema, "jobs_history_partition"))
    with connect(url) as conn:
        for day in range(DAYS):
            for state in STATES:
                conn.execute(make, [state, first + timedelta(days=day, hours=12)])
        for start in range(1, jobs + 1, CHUNK):
            began = time.monotonic()
            stop = min(jobs, start + CHUNK - 1)
            params = {"first": first, "span": f"{DAYS} days", "jobs": jobs, "start": start,
                      "stop": stop}  # fmt: skip
            conn.execute(sql.SQL(LOAD).format(history=history), params)
            say(f"  rows {start:,}-{stop:,} in {time.monotonic() - began:.1f} s")
        began = time.monotonic()
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(history))
        say(f"  VACUUM ANALYZE in {time.monotonic() - began:.1f} s")
        conn.execute("CHECKPOINT")


def cpu_seconds(pid: int, children: bool) -> float:
    """The CPU a process used (and its reaped children, when asked), from /proc."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    used = fields[11:15] if children else fields[11:13]
    return sum(int(value) for value in used) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """The machine's CPU time not idle, all cores together, from /proc/stat."""
    with open("/proc/stat") as file:
        ticks = [int(value) for value in file.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def postmaster(conn: psycopg.Connection[Any]) -> int | None:
    """The server's postmaster, when it runs on this machine and we may read its pid."""
    try:
        row = conn.execute("SHOW data_directory").fetchone()
        with open(os.path.join(str(row[0] if row else ""), "postmaster.pid")) as file:
            return int(file.readline())
    except (OSError, ValueError, psycopg.Error):
        return None


def ours(server: int | None) -> float:
    """The CPU of this process and of the server's processes (those gone included: the
    postmaster reaps them); NaN when the server is not ours to read."""
    if server is None:
        return math.nan
    used = cpu_seconds(os.getpid(), children=False) + cpu_seconds(server, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    parent = int(file.read().rsplit(")", 1)[1].split()[1])
                if parent == server:
                    used += cpu_seconds(int(entry), children=True)
            except (OSError, ValueError):
                continue
    return used


def live_stats(conn: psycopg.Connection[Any], schema: str) -> tuple[int, ...]:
    row = conn.execute(LIVE_STATS, [schema]).fetchone()
    assert row is not None
    return tuple(int(value or 0) for value in row)


def history_stats(conn: psycopg.Connection[Any], schema: str) -> tuple[int, int]:
    row = conn.execute(HISTORY_STATS, [f"{schema}.jobs_history"]).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def steady(
    url: str,
    schema: str,
    label: str,
    args: argparse.Namespace,
    during: Callable[[], None] | None = None,
) -> Run:
    """The steady load on `schema` for `args.seconds` after `args.warmup` (or, with
    `during`, until `during()`, started LEAD seconds into the window, returns, and LEAD
    seconds more)."""
    run = Run(label)
    app = pgjobs.App(url, schema=schema)
    stop = threading.Event()
    window = [math.inf, math.inf]  # perf_counter() of its start and end

    failures: list[BaseException] = []

    def timed(began: float) -> bool:
        return window[0] <= began < window[1]

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                target()
            except BaseException as error:
                failures.append(error)
                stop.set()
                raise

        return body

    def producer(k: int) -> Callable[[], None]:
        every = args.producers / args.rate  # each producer's share, interleaved

        def produce() -> None:
            due = time.perf_counter() + k * every / args.producers
            n = k
            while not stop.is_set():
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                began = time.perf_counter()
                app.enqueue(None, "noop", {"n": n})
                if timed(began):
                    run.enqueue.append(time.perf_counter() - began)
                n += args.producers
                due += every

        return produce

    def consume() -> None:
        claims = app.data.claims
        with connect(url) as conn:
            idle = 0
            while idle < 3:  # after the producer stops: until nothing is left
                began = time.perf_counter()
                jobs, _ = claims.claim(
                    conn, limit=CLAIM_LIMIT, queue=None, worker_id=WORKER, begin=CLAIM_LIMIT
                )
                claimed = time.perf_counter()
                if not jobs:
                    run.empty_claims += timed(began)
                    idle = idle + 1 if stop.is_set() else 0
                    time.sleep(EMPTY_SLEEP)
                    continue
                outcomes = [Outcome(job.id, job.attempt, JobState.COMPLETED) for job in jobs]
                claims.record_outcomes(conn, outcomes, worker_id=WORKER)
                if timed(began):
                    run.claim.append(claimed - began)
                    run.complete.append(time.perf_counter() - claimed)
                    run.completed += len(jobs)

    with connect(url) as conn:
        conn.execute("CHECKPOINT")
        targets = [consume, *(producer(k) for k in range(args.producers))]
        threads = [threading.Thread(target=guarded(target)) for target in targets]
        try:
            for thread in threads:
                thread.start()
            time.sleep(args.warmup)
            start = live_stats(conn, schema)
            server = postmaster(conn)
            cpu = (busy_seconds(), ours(server))
            window[0] = time.perf_counter()
            helper = threading.Thread(target=guarded(during)) if during else None
            most = start
            while not failures:
                time.sleep(1.0)
                elapsed = time.perf_counter() - window[0]
                if helper and elapsed >= LEAD and not helper.is_alive() and not helper.ident:
                    helper.start()
                most = tuple(max(a, b) for a, b in zip(most, live_stats(conn, schema), strict=True))
                if helper is None and elapsed >= args.seconds:
                    break
                if helper and helper.ident and not helper.is_alive():
                    time.sleep(LEAD)
                    break
            window[1] = time.perf_counter()
            run.load = os.getloadavg()[0]
            others = busy_seconds() - cpu[0] - (ours(server) - cpu[1])
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            app.close()
        if failures:
            raise RuntimeError(f"the {label} run failed") from failures[0]
        run.seconds = window[1] - window[0]
        run.others = others / run.seconds
        time.sleep(STATS_FLUSH)
        end = live_stats(conn, schema)
    run.live = {
        "start": start,
        "end": end,
        "most": tuple(max(a, b) for a, b in zip(most, end, strict=True)),
    }
    say(
        f"  {label} (load {run.load:.1f}, others {run.others:.2f} cores): "
        f"{run.rate(run.enqueue):,.0f} enqueued/s, "
        f"{run.rate(run.completed):,.0f} completed/s; p99 enqueue "
        f"{percentile(run.enqueue, 99):.2f} ms, claim {percentile(run.claim, 99):.2f} ms, "
        f"completion {percentile(run.complete, 99):.2f} ms"
    )
    return run


def retention(url: str, schema: str, found: dict[str, Any]) -> None:
    """Drop the oldest day's completed partition; empty the next one row by row. Fills
    `found` with what each took and left."""
    statements = pgjobs.App(url, schema=schema).data.history
    with connect(url) as conn:
        completed = [p for p in statements.partitions(conn) if p.state == "completed"]
        oldest, following = completed[0], completed[1]
        seconds = (datetime.now(timezone.utc) - oldest.ends_at).total_seconds() - 3600
        found["partition"] = oldest.name
        found["live_before"] = live_stats(conn, schema)[1]
        found["history_before"] = history_stats(conn, schema)
        began = time.perf_counter()
        dropped = drop_expired(conn, statements, {"completed": seconds})
        found["drop_seconds"] = time.perf_counter() - began
        found["dropped"] = dropped["completed"]
        left = {p.name for p in statements.partitions(conn)}
        assert oldest.name not in left and following.name in left, "not exactly one day"
        time.sleep(STATS_FLUSH)
        found["live_drop"] = live_stats(conn, schema)[1]
        found["history_drop"] = history_stats(conn, schema)
        found["deleted_partition"] = following.name
        table = sql.Identifier(schema, following.name)
        size = "SELECT pg_total_relation_size(%s::regclass)"
        found["deleted_size_before"] = scalar(url, size, [f"{schema}.{following.name}"])
    prune = sql.SQL(PRUNE).format(partition=table)
    deleted = batches = 0
    began = time.perf_counter()
    with connect(url) as conn:  # closed before the counters are read: it flushes them
        while True:
            count = conn.execute(prune, [following.ends_at, PRUNE_BATCH]).rowcount
            if count <= 0:
                break
            deleted += count
            batches += 1
    found["delete_seconds"] = time.perf_counter() - began
    found["deleted"], found["batches"] = deleted, batches
    time.sleep(STATS_FLUSH)
    with connect(url) as conn:
        found["live_delete"] = live_stats(conn, schema)[1]
        found["history_delete"] = history_stats(conn, schema)
        found["deleted_dead"] = scalar(
            url,
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
            [schema, following.name],
        )
        found["deleted_size_after"] = scalar(url, size, [f"{schema}.{following.name}"])


def explain(url: str, schema: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one claim and one completion, rolled back."""
    app = pgjobs.App(url, schema=schema)
    claims, lines = app.data.claims, [f"-- {schema}"]
    with psycopg.connect(url, prepare_threshold=None) as conn:
        for _ in range(20):
            app.enqueue(conn, "noop", {"n": 0})
        explained = explain_claim(
            conn, schema, limit=CLAIM_LIMIT, begin=CLAIM_LIMIT, options="ANALYZE, BUFFERS"
        )
        lines += [row[0] for row in explained]
        for _ in range(20):
            app.enqueue(conn, "noop", {"n": 0})
        jobs, _ = claims.claim(conn, limit=CLAIM_LIMIT, queue=None, worker_id=WORKER)
        outcomes = [Outcome(job.id, job.attempt, JobState.COMPLETED) for job in jobs]
        for statement in claims.outcome_statements(outcomes, worker_id=WORKER):
            query = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + statement.query
            lines += ["", *(row[0] for row in conn.execute(query, statement.params))]
        conn.rollback()
    app.close()
    return "\n".join(lines)


def report(runs: list[Run], gone: dict[str, Any]) -> str:
    lines = [
        "| run | enqueue p50 / p99 ms | claim p50 / p99 ms | completion p50 / p99 ms "
        "| empty claims | enqueued/s | completed/s | jobs_live MB start / end / most "
        "| jobs_live dead tuples start / end / most | autovacuums / autoanalyzes "
        "| other autovacuums + autoanalyzes in the schema | load avg | other CPU (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]

    def pair(samples: list[float]) -> str:
        return f"{percentile(samples, 50):.2f} / {percentile(samples, 99):.2f}"

    for run in runs:
        start, end, most = (run.live[k] for k in ("start", "end", "most"))
        sizes = " / ".join(f"{v[0] / 2**20:.1f}" for v in (start, end, most))
        dead = " / ".join(f"{v[1]:,}" for v in (start, end, most))
        lines.append(
            f"| {run.label} | {pair(run.enqueue)} | {pair(run.claim)} | {pair(run.complete)} "
            f"| {run.empty_claims:,} | {run.rate(run.enqueue):,.0f} "
            f"| {run.rate(run.completed):,.0f} | {sizes} | {dead} "
            f"| {end[2] - start[2]} / {end[3] - start[3]} | {end[4] - start[4]} "
            f"| {run.load:.1f} | {run.others:.2f} |"
        )
    pooled = {}
    for name in ("empty", "kept"):
        mine = [r for r in runs if r.label.startswith(f"{name}, round")]
        pooled[name] = {k: [s for r in mine for s in getattr(r, k)] for k in KINDS}
        lines.append(
            f"| **{name}, all rounds** | {pair(pooled[name]['enqueue'])} "
            f"| {pair(pooled[name]['claim'])} | {pair(pooled[name]['complete'])} "
            "| | | | | | | | | |"
        )
    ratios = []
    for kind in KINDS:
        overall = percentile(pooled["kept"][kind], 99) / percentile(pooled["empty"][kind], 99)
        rounds = [
            percentile(getattr(k, kind), 99) / percentile(getattr(e, kind), 99)
            for e, k in zip(
                [r for r in runs if r.label.startswith("empty, round")],
                [r for r in runs if r.label.startswith("kept, round")],
                strict=True,
            )
        ]
        each = ", ".join(f"{r:.2f}" for r in rounds)
        ratios.append(f"{overall:.2f}x" + (f" (rounds: {each})" if len(rounds) > 1 else ""))
    lines.append(
        f"| **p99 kept / empty** | {ratios[0]} | {ratios[1]} | {ratios[2]} | | | | | | | | | |"
    )
    if gone:
        lines += ["", retention_report(gone)]
    return "\n".join(lines)


def retention_report(gone: dict[str, Any]) -> str:
    def moments(first: str, then: str) -> str:
        live = f"{gone['live_' + first]:,} / {gone['live_' + then]:,}"
        (mb_before, dead_before), (mb_after, dead_after) = (
            gone["history_" + first],
            gone["history_" + then],
        )
        dead = f"{dead_before:,} / {dead_after:,}"
        return f"{live} | {dead} | {mb_before / 2**20:,.0f} / {mb_after / 2**20:,.0f}"

    lines = [
        "| retention on `kept`, under the load | time | rows removed "
        "| jobs_live dead tuples before / after | history dead tuples before / after "
        "| history MB before / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| `drop_expired`: DETACH CONCURRENTLY + DROP of `{gone['partition']}` "
        f"| {gone['drop_seconds']:.2f} s | {gone['dropped']:,} | {moments('before', 'drop')} |",
        f"| row by row: `{gone['deleted_partition']}` in {gone['batches']} batches "
        f"of {PRUNE_BATCH:,} | {gone['delete_seconds']:.2f} s | {gone['deleted']:,} "
        f"| {moments('drop', 'delete')} |",
        "",
        f"The partition emptied row by row: {gone['deleted_dead']:,} dead tuples in it, "
        f"{gone['deleted_size_before'] / 2**20:,.1f} MB before and "
        f"{gone['deleted_size_after'] / 2**20:,.1f} MB after (until a vacuum).",
    ]
    return "\n".join(lines)


def main() -> None:
    from pgjobs.embedded import temporary_cluster
    from pgjobs.migrate import upgrade

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=10_000_000, help="finished jobs kept")
    parser.add_argument("--seconds", type=float, default=180.0, help="timed, each run")
    parser.add_argument("--rate", type=float, default=1000.0, help="jobs enqueued per second")
    parser.add_argument("--producers", type=int, default=8, help="threads sharing the rate")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each schema")
    parser.add_argument("--warmup", type=float, default=5.0, help="untimed seconds per run")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN both schemas at the end")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    schemas = {"empty": f"bench_history_empty_{tag}", "kept": f"bench_history_kept_{tag}"}
    began = time.monotonic()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        for schema in schemas.values():
            upgrade(url, schema)
            stack.callback(drop, url, schema)
        say(f"loading {args.jobs:,} finished jobs into {schemas['kept']}")
        started = time.monotonic()
        load(url, schemas["kept"], args.jobs)
        loaded = time.monotonic() - started
        with connect(url) as conn:
            for schema in schemas.values():  # ids after the history's, in both
                conn.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                    [f"{schema}.jobs_live", args.jobs],
                )
            history_mb = history_stats(conn, schemas["kept"])[0] / 2**20
            live_mb = live_stats(conn, schemas["kept"])[0] / 2**20
        runs = []
        for n in range(args.rounds):
            order = ("kept", "empty") if n % 2 == 0 else ("empty", "kept")
            for name in order:
                say(f"round {n + 1}: {name}")
                runs.append(steady(url, schemas[name], f"{name}, round {n + 1}", args))
        say("retention on kept, under load")
        gone: dict[str, Any] = {}
        runs.append(
            steady(url, schemas["kept"], "kept, during retention", args,
                   during=lambda: retention(url, schemas["kept"], gone))
        )  # fmt: skip
        version = scalar(url, "SHOW server_version")
        plans = [explain(url, s) for s in schemas.values()] if args.explain else []
        print(
            f"pgjobs history apart from the hot table: {args.jobs:,} finished jobs kept "
            f"(loaded in {loaded:.0f} s; history {history_mb:,.0f} MB, jobs_live "
            f"{live_mb:,.2f} MB), {args.rate:,.0f} jobs/s for {args.seconds:.0f} s a run "
            f"after {args.warmup:.0f} s untimed, {args.rounds} rounds; PostgreSQL {version}, "
            f"{os.cpu_count()} cores, {datetime.now(timezone.utc):%Y-%m-%d}, "
            f"{time.monotonic() - began:.0f} s in all\n"
        )
        print(report(runs, gone))
        for plan in plans:
            print("\n" + plan)


if __name__ == "__main__":
    main()
