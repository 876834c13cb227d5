"""Where a drain's CPU goes: pgjobs' worker beside the raw-SQL baseline, part by part.

    python bench/profile/drain.py [--jobs 40000] [--rounds 3] [--py-spy PATH] [--out DIR]

On a throwaway cluster (the bundled PostgreSQL, as compare.py's; or PGJOBS_PG_BINDIR), in
one database, with `--jobs` no-op jobs a drain, this measures and prints, as Markdown:

1. **CPU per job**, rounds of raw SQL (`raw_sql.py work --threads 2 --batch 500`, the
   issue's best raw setting) and pgjobs (`pgjobs work --concurrency 10`) in turn, read as
   compare.py reads it (`comparison/common/cpu.py`): the server's backends, the worker
   process, and each of the worker's threads (native ids named by `worker.py`, which
   runs `pgjobs work` in its process; their clocks read from `/proc` while the worker is
   idle just before the jobs fall due and once they are drained), plus the server's
   background processes. Medians of the rounds.
2. **Statements**: a drain of pgjobs with every statement counted in the worker
   (`PROFILE_COUNT=1`): per statement and thread, calls per 1,000 jobs, rows per call and
   the client's wall time per call; and `pg_stat_wal`'s WAL bytes and records per job
   for both systems (the cluster runs nothing else).
3. **py-spy** (with `--py-spy`, a py-spy binary installed outside the project, e.g.
   `pip install --target /tmp/pyspy py-spy`): a drain of `--spy-jobs` sampled with
   `record --threads --gil --nonblocking` (the thread holding the GIL: Python's own CPU);
   per thread group, the share of samples in each part of the code (event dispatch,
   logging, hand-offs between threads, psycopg, ...), converted to µs per job with that
   group's CPU from part 1, and the top functions by self samples. The raw samples are
   written to `--out`.
4. **Statements replayed one at a time** on a connection of their own, as the worker
   sends them (same text, same parameters, autocommit, no server-side prepare), on a
   table of `--jobs` waiting jobs: the backend's CPU per statement and per row (its CPU
   clock around each one, so parse, plan, execution and commit) and the client's, for
   pgjobs' CLAIM, READY_JOBS, COMPLETE_JOBS, HEARTBEAT and RECORD_OUTCOMES and raw SQL's
   claim and completion; then `EXPLAIN (ANALYZE, BUFFERS)` of each (rolled back).
5. **Rows and indexes**: `pg_column_size` of a waiting, a running and a completed row,
   the tables' indexes and how many bytes each grew per job over a drain (pgjobs'
   `jobs_live`, and `jobs_history` that its completions move the rows into, summed over
   its partitions), the share of HOT updates, and the row deletes.

pgjobs' jobs are inserted due a few seconds ahead (the NOTIFY trigger off), the worker
started, and a NOTIFY sent when they fall due, so its start-up is over before the first
claim; raw SQL claims at once, and its start-up is left out by the window (first claim
to last outcome) that both are measured over.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
PEERS = BENCH / "peers"
sys.path[:0] = [str(BENCH), str(PEERS)]

import raw_sql  # noqa: E402  (bench/peers: the baseline's schema and statements)
from comparison.common.cpu import CpuSampler  # noqa: E402
from harness import make_partitions, stop  # noqa: E402

from pgjobs.data.claims import (  # noqa: E402
    CLAIM,
    HEARTBEAT,
    READY_JOBS,
    claim_params,
)
from pgjobs.data.function_plans import explain_claim, explain_completion  # noqa: E402
from pgjobs.data.layer import DataLayer  # noqa: E402
from pgjobs.data.sql import id_ranges, int_array, notify_channel  # noqa: E402
from pgjobs.embedded import temporary_cluster  # noqa: E402
from pgjobs.migrate import upgrade  # noqa: E402
from pgjobs.types import JobState, Outcome  # noqa: E402

SCHEMA = "pgjobs"
JOBS = sql.Identifier(SCHEMA, "jobs")  # the view of every job, to read
LIVE = f"{SCHEMA}.jobs_live"  # waiting and running jobs: the drain's claims and deletes
HISTORY = f"{SCHEMA}.jobs_history"  # finished jobs: the completions insert into it
TASK = "bench.job"
PGJOBS_SETTING = ("--concurrency", "10")
RAW_SETTING = ("--threads", "2", "--batch", "500")
LEAD = 6.0  # seconds between inserting pgjobs' jobs and their falling due
TIMEOUT = 300.0
WORKER_ID = "profile"

# Thread groups, by the name of a pgjobs thread.
GROUPS = (
    ("executors", re.compile(r"pgjobs-executor-\d+")),
    ("fetcher", re.compile(r"pgjobs-fetcher")),
    ("completer", re.compile(r"pgjobs-completer")),
    ("readier", re.compile(r"pgjobs-readier")),
    ("heartbeat", re.compile(r"pgjobs-heartbeat")),
    ("listener", re.compile(r"pgjobs-listener")),
    ("hooks", re.compile(r"pgjobs-hooks")),
    ("main", re.compile(r"MainThread")),
)
# Parts of the code, by a frame anywhere in a sample's stack (the first that matches
# counts, in this order, so a psycopg call made by the event bus counts as events).
PARTS = (
    ("the task itself", ("pgjobs_bench.py",)),
    ("event dispatch", ("pgjobs/worker/events.py",)),
    ("logging", ("logging/", "pgjobs/worker/log_events.py")),
    ("hooks", ("pgjobs/worker/hook_dispatch.py", "pgjobs/hooks.py")),
    ("metrics", ("metrics.py",)),
    ("json decoding", ("json/",)),
    ("psycopg (statements, rows)", ("psycopg/", "pgjobs/data/")),
    ("claim buffer (heap, windows)", ("pgjobs/worker/claim_buffer.py",)),
    ("hand-offs (locks, conditions)", ("threading.py", "queue.py")),
    ("outcome policy", ("pgjobs/worker/outcomes.py",)),
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- the cluster and the tables -----------------------------------------------------------


def one(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def fill_pgjobs(conn: psycopg.Connection[Any], count: int, due_in: float) -> float:
    """`count` jobs due in `due_in` seconds (epoch seconds of when), the trigger off, in
    an emptied `jobs_live`; `jobs_history` emptied, its partitions of today made."""
    conn.execute(f"TRUNCATE {LIVE}, {HISTORY} RESTART IDENTITY")
    make_partitions(conn, SCHEMA)
    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(SCHEMA, "workers")))
    due = time.time() + due_in
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (task, payload, run_at) SELECT %s, jsonb_build_object('n', g),"
                " to_timestamp(%s) FROM generate_series(1, %s) g"
            ).format(sql.Identifier(SCHEMA, "jobs_live")),
            (TASK, due, count),
        )
    settle(conn)
    return due


def fill_raw(conn: psycopg.Connection[Any], count: int) -> None:
    conn.execute(raw_sql.DESCRIPTION["reset"])
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(raw_sql.DESCRIPTION["fill_waiting"], {"count": count})
    settle(conn)


def settle(conn: psycopg.Connection[Any]) -> None:
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def window(conn: psycopg.Connection[Any], query: str, count: int) -> tuple[float, float]:
    row = conn.execute(query).fetchone()
    assert row is not None and row[2] == count, f"{row} of {count} finished"
    return float(row[0]), float(row[1])


PGJOBS_WINDOW = f"""
    SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),
           count(*) FILTER (WHERE state = 'completed')
    FROM {SCHEMA}.jobs"""


def unfinished(conn: psycopg.Connection[Any], table: str) -> int:
    query = f"SELECT count(*) FROM {table} WHERE state IN ('available', 'running')"
    return int(one(conn, query))


def wal(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute("SELECT wal_bytes, wal_records FROM pg_stat_wal").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# The size of a partitioned table or index: its partitions' (bytes).
PARTITIONS_SIZE = (
    "SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree(%s::regclass)"
)


def table_stats(
    conn: psycopg.Connection[Any], table: str, history: str | None = None
) -> dict[str, int]:
    """Sizes of the table and each of its indexes (bytes), and its update and delete
    counts; with `history` (pgjobs' jobs_history), the sizes of its partitions and of each
    of its indexes, summed over the partitions, too."""
    sizes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
        " WHERE indrelid = %s::regclass",
        (table,),
    ).fetchall()
    stats: dict[str, int] = {name: int(size) for name, size in sizes}
    stats["(table)"] = int(one(conn, "SELECT pg_relation_size(%s::regclass)", (table,)))
    if history is not None:
        stats["(history, all partitions)"] = int(one(conn, PARTITIONS_SIZE, (history,)))
        for (index,) in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
            (history,),
        ).fetchall():
            stats[str(index)] = int(one(conn, PARTITIONS_SIZE, (index,)))
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"
        " WHERE relid = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None
    stats["updates"], stats["hot updates"], stats["deletes"] = map(int, row)
    return stats


# --- a drain, measured --------------------------------------------------------------------


@dataclass
class Drain:
    """One drain's figures: per job, seconds of CPU (server, client, by thread name and
    by background process), WAL, and the statements counted in the worker."""

    jobs: int
    rate: float
    server: float
    client: float
    threads: dict[str, float]
    background: dict[str, float]
    wal_bytes: float
    wal_records: float
    statements: list[list[Any]] = field(default_factory=list)
    table: dict[str, int] = field(default_factory=dict)
    gc: dict[str, list[float]] = field(default_factory=dict)  # generation -> [count, s]
    switches: float = 0.0  # the worker's context switches per job


def worker_command(system: str, url: str) -> list[str]:
    if system == "raw":
        return [sys.executable, str(PEERS / "raw_sql.py"), "work", "--url", url, *RAW_SETTING]
    return [
        sys.executable, str(HERE / "worker.py"), "--app", "pgjobs_bench:app",
        "--database-url", url, "--log-level", "WARNING", *PGJOBS_SETTING,
    ]  # fmt: skip


def thread_clocks(pid: int) -> dict[int, int]:
    """Each thread's CPU time so far (ns, by native id), from `/proc` (`schedstat`): the
    kernel lends no other process's thread clock."""
    clocks: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError, IndexError, ValueError):
            clocks[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return clocks


def switches(pid: int) -> int:
    """Context switches of all of the process's threads so far (voluntary: a thread that
    waits on a lock, a condition or the network; involuntary: preempted)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


def read_state(path: Path) -> dict[str, Any]:
    for _ in range(50):
        try:
            state: dict[str, Any] = json.loads(path.read_text())
            return state
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"no state from the worker in {path}")


@contextmanager
def spying(py_spy: str | None, pid: int, out: Path | None) -> Iterator[None]:
    """py-spy recording `pid` for the block, its raw samples written to `out`."""
    if py_spy is None or out is None:
        yield
        return
    command = [
        py_spy, "record", "--pid", str(pid), "--threads", "--gil", "--nonblocking",
        "--rate", "1000",
        "--format", "raw", "--output", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {errors.decode(errors='replace')}")


def drain(
    url: str,
    admin: psycopg.Connection[Any],
    system: str,
    count: int,
    files: Path,
    *,
    census: bool = False,
    py_spy: str | None = None,
    spy_out: Path | None = None,
) -> Drain:
    """Fill, start the worker, drain `count` jobs, and read every figure of it."""
    table, history = ("raw_jobs", None) if system == "raw" else (LIVE, HISTORY)
    due: float | None = None
    if system == "raw":
        fill_raw(admin, count)
    else:
        due = fill_pgjobs(admin, count, LEAD)
    state_file = files / f"state-{time.monotonic_ns()}.json"
    env = dict(os.environ, PYTHONPATH=str(PEERS), PROFILE_STATE=str(state_file))
    env["PROFILE_COUNT"] = "1" if census else "0"
    before_table = table_stats(admin, table, history)
    wal_before = wal(admin)
    sampler = CpuSampler(url, {admin.info.backend_pid})
    sampler.start()
    with ExitStack() as stack:
        stack.callback(sampler.stop)
        log = stack.enter_context(open(files / f"{system}.log", "ab"))
        worker = subprocess.Popen(
            worker_command(system, url), cwd=PEERS, env=env, stdout=log, stderr=log
        )
        stack.callback(stop, worker)
        sampler.watch([worker.pid])
        statements_before: list[list[Any]] = []
        gc_before: dict[str, list[float]] = {}
        threads_before: dict[int, int] = {}
        switches_before = 0  # raw SQL's: since its start, which takes few
        if due is not None:
            while one(admin, f"SELECT count(*) FROM {SCHEMA}.workers") < 1:
                if worker.poll() is not None or time.time() > due:
                    raise RuntimeError(f"the worker did not start in time (see {log.name})")
                time.sleep(0.05)
            stack.enter_context(spying(py_spy, worker.pid, spy_out))
            state = read_state(state_file)
            statements_before, gc_before = state["statements"], state["gc"]
            time.sleep(max(0.0, due - time.time()) + 0.01)
            # The worker is idle until the NOTIFY, and again once drained: its threads'
            # clocks read then need no interpolation.
            threads_before = thread_clocks(worker.pid)
            switches_before = switches(worker.pid)
            admin.execute("SELECT pg_notify(%s, 'default')", (notify_channel(SCHEMA),))
        deadline = time.monotonic() + TIMEOUT
        while unfinished(admin, table):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{system} did not drain (see {log.name})")
            time.sleep(0.05)
        time.sleep(0.1)  # past the window's tail
        threads_after = thread_clocks(worker.pid)
        switched = switches(worker.pid) - switches_before
        state = (
            read_state(state_file)
            if system != "raw"
            else {"threads": {}, "statements": [], "gc": {}}
        )
        sampler.stop()
        stack.pop_all().close()  # py-spy written, worker stopped
    time.sleep(0.6)  # the backends' statistics are flushed as they exit
    query = raw_sql.DESCRIPTION["window"] if system == "raw" else PGJOBS_WINDOW
    first, last = window(admin, query, count)
    if due is not None and first < due - 0.05:
        raise RuntimeError("pgjobs claimed before its jobs were due")
    cpu = sampler.between(first, last)
    names = {int(tid): name for tid, name in state["threads"].items()}
    threads: defaultdict[str, float] = defaultdict(float)
    if threads_before:
        for tid, clock in threads_after.items():
            threads[names.get(tid, "(unnamed)")] += (clock - threads_before.get(tid, 0)) / 1e9
    background: defaultdict[str, float] = defaultdict(float)
    for pid, seconds in sampler.backends_between(first, last).items():
        kind = sampler.types.get(pid, "(unknown)")
        # The background processes only: this script's own backends are not the drain's.
        if not sampler.kinds.get(pid) and kind not in ("client backend", "(unknown)"):
            background[kind] += seconds
    wal_after = wal(admin)
    return Drain(
        jobs=count,
        rate=count / (last - first),
        server=cpu.server / count,
        client=cpu.client / count,
        threads={name: seconds / count for name, seconds in threads.items()},
        background={name: seconds / count for name, seconds in background.items()},
        wal_bytes=(wal_after[0] - wal_before[0]) / count,
        wal_records=(wal_after[1] - wal_before[1]) / count,
        statements=difference(state["statements"], statements_before),
        table=subtract(table_stats(admin, table, history), before_table),
        switches=switched / count,
        gc={
            generation: [
                a - b for a, b in zip(entry, gc_before.get(generation, [0, 0.0]), strict=True)
            ]
            for generation, entry in state["gc"].items()
        },
    )


def difference(after: list[list[Any]], before: list[list[Any]]) -> list[list[Any]]:
    earlier = {(thread, name): values for thread, name, *values in before}
    found = []
    for thread, name, *values in after:
        base = earlier.get((thread, name), [0, 0, 0.0])
        found.append([thread, name, *(a - b for a, b in zip(values, base, strict=True))])
    return [row for row in found if row[2] > 0]


def subtract(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in after.items()}


# --- py-spy's samples ---------------------------------------------------------------------


def group_of(thread: str) -> str:
    for group, pattern in GROUPS:
        if pattern.fullmatch(thread):
            return group
    return "other"


def part_of(frames: list[str]) -> str:
    """The part of the innermost frame that belongs to one: a sample's own time goes to
    the code it is in (a lock taken inside psycopg is psycopg's, a log record written for
    an event is logging's, not the event bus's)."""
    for frame in reversed(frames):
        for name, markers in PARTS:
            if any(marker in frame for marker in markers):
                return name
    return "the rest of pgjobs' loops"


def read_samples(path: Path) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """From py-spy's raw output: per thread group, samples by part and by innermost
    function."""
    parts: dict[str, Counter[str]] = {}
    functions: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        head = frames.pop(0)
        thread = head.partition(": ")[2] or "(unnamed)"
        group = group_of(thread)
        parts.setdefault(group, Counter())[part_of(frames)] += int(samples)
        innermost = frames[-1] if frames else "(none)"
        functions.setdefault(group, Counter())[innermost] += int(samples)
    return parts, functions


# --- statements one at a time ---------------------------------------------------------------


@dataclass
class Replayed:
    name: str
    rows: list[int] = field(default_factory=list)
    server_us: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)
    plan: str = ""


def timed(
    conn: psycopg.Connection[Any], backend: int, statement: Any, params: Any, binary: bool = False
) -> tuple[list[tuple[Any, ...]], float, float]:
    """Rows, and the backend's and this thread's CPU µs for one statement (autocommit)."""
    clock = ((~backend) << 3) | 2
    server = time.clock_gettime_ns(clock)
    client = time.thread_time_ns()
    cur = conn.execute(statement, params, binary=binary)
    rows = cur.fetchall() if cur.description else []
    client = time.thread_time_ns() - client
    server = time.clock_gettime_ns(clock) - server
    return rows, server / 1e3, client / 1e3


def explained(conn: psycopg.Connection[Any], statement: Any, params: Any) -> str:
    with conn.transaction(force_rollback=True):
        query = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + (
            statement if isinstance(statement, sql.Composable) else sql.SQL(statement)
        )
        return "\n".join(line for (line,) in conn.execute(query, params).fetchall())


def replay(
    url: str, admin: psycopg.Connection[Any], count: int, claim: int, complete: int
) -> tuple[list[Replayed], dict[str, float]]:
    """The worker's statements and raw SQL's, one at a time on a connection of their own:
    CPU per statement and per row, their plans, and the width of the rows."""
    layer = DataLayer(SCHEMA)
    claims = layer.claims
    found: dict[str, Replayed] = {}
    widths: dict[str, float] = {}

    def record(name: str, rows: int, server: float, client: float) -> None:
        entry = found.setdefault(name, Replayed(name))
        entry.rows.append(rows)
        entry.server_us.append(server)
        entry.client_us.append(client)

    fill_pgjobs(admin, count, -1.0)
    admin.execute(
        sql.SQL(
            "INSERT INTO {} (id, host, pid, queues, concurrency, version, rescue_after, duties)"
            " VALUES (%s, 'profile', 1, '{{}}', 10, 'profile', 60, '{{}}')"
        ).format(sql.Identifier(SCHEMA, "workers")),
        (WORKER_ID,),
    )
    widths["pgjobs waiting row"] = float(
        one(admin, sql.SQL("SELECT avg(pg_column_size(j.*)) FROM {} j").format(JOBS))
    )
    claim_sql = layer.sql.render(CLAIM)
    ready_sql = layer.sql.render(READY_JOBS)
    heartbeat_sql = layer.sql.render(HEARTBEAT)
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        backend = conn.info.backend_pid
        held: list[int] = []
        rounds = max(1, min(count // claim - 2, 20))
        for _ in range(rounds):
            params = claim_params(limit=claim, worker_id=WORKER_ID, begin=10)
            rows, server, client = timed(conn, backend, claim_sql, params, binary=True)
            record("CLAIM", len(rows), server, client)
            ids = sorted(row[0] for row in rows)
            held += ids
            ready = {"ranges": id_ranges(ids), "worker_id": WORKER_ID}
            rows, server, client = timed(conn, backend, ready_sql, ready)
            record("READY_JOBS", len(ids), server, client)
        widths["pgjobs running row"] = float(
            one(
                admin,
                sql.SQL("SELECT avg(pg_column_size(j.*)) FROM {} j WHERE state = 'running'").format(
                    JOBS
                ),
            )
        )
        beat = {"ids": int_array(held[:1000]), "worker_id": WORKER_ID}
        rows, server, client = timed(conn, backend, heartbeat_sql, beat)
        record("HEARTBEAT", len(rows), server, client)
        retried = held[:complete]
        outcomes = [
            Outcome(job_id, 1, JobState.AVAILABLE, 60.0, {"message": "retry"}) for job_id in retried
        ]
        (retry_statement,) = claims.outcome_statements(outcomes, worker_id=WORKER_ID)
        rows, server, client = timed(conn, backend, retry_statement.query, retry_statement.params)
        record("RECORD_OUTCOMES (retries)", len(rows), server, client)
        plans: dict[str, tuple[Any, Any]] = {}
        left = held[complete:]
        for start in range(0, len(left), complete):
            batch = left[start : start + complete]
            done = [Outcome(job_id, 1, JobState.COMPLETED) for job_id in batch]
            (statement,) = claims.outcome_statements(done, worker_id=WORKER_ID)
            rows, server, client = timed(conn, backend, statement.query, statement.params)
            record("COMPLETE_JOBS", len(rows), server, client)
        widths["pgjobs completed row"] = float(
            one(
                admin,
                sql.SQL(
                    "SELECT avg(pg_column_size(j.*)) FROM {} j WHERE state = 'completed'"
                ).format(JOBS),
            )
        )
        # The plans, on the same table: claim and ready again, then each statement
        # rolled back.
        params = claim_params(limit=claim, worker_id=WORKER_ID, begin=10)
        rows = conn.execute(claim_sql, params, binary=True).fetchall()
        ids = sorted(row[0] for row in rows)
        plans["READY_JOBS"] = (ready_sql, {"ranges": id_ranges(ids), "worker_id": WORKER_ID})
        plans["HEARTBEAT"] = (heartbeat_sql, {"ids": int_array(ids), "worker_id": WORKER_ID})
        retries = [
            Outcome(job_id, 1, JobState.AVAILABLE, 60.0, {"message": "retry"})
            for job_id in ids[:complete]
        ]
        (statement,) = claims.outcome_statements(retries, worker_id=WORKER_ID)
        plans["RECORD_OUTCOMES (retries)"] = (statement.query, statement.params)
        for name, (statement_sql, statement_params) in plans.items():
            found[name].plan = explained(conn, statement_sql, statement_params)
        # the claim as `claim_jobs` plans it, the completion as `complete_jobs` does
        # (EXPLAIN of a call shows only the call)
        found["CLAIM"].plan = "\n".join(
            line
            for (line,) in explain_claim(
                conn, SCHEMA, limit=claim, begin=10, options="ANALYZE, BUFFERS"
            )
        )
        found["COMPLETE_JOBS"].plan = "\n".join(
            line
            for (line,) in explain_completion(
                conn,
                SCHEMA,
                outcomes=[Outcome(job_id, 1, JobState.COMPLETED) for job_id in ids[:complete]],
                worker_id=WORKER_ID,
                options="ANALYZE, BUFFERS",
            )
        )

        fill_raw(admin, count)
        widths["raw waiting row"] = float(
            one(admin, "SELECT avg(pg_column_size(j.*)) FROM raw_jobs j")
        )
        for _ in range(rounds):
            rows, server, client = timed(conn, backend, raw_sql.CLAIM, {"batch": claim})
            record("raw claim", len(rows), server, client)
            ids = [row[0] for row in rows]
            rows, server, client = timed(conn, backend, raw_sql.COMPLETE, (ids,))
            record("raw completion", len(ids), server, client)
        widths["raw completed row"] = float(
            one(admin, "SELECT avg(pg_column_size(j.*)) FROM raw_jobs j WHERE state = 'completed'")
        )
        found["raw claim"].plan = explained(conn, raw_sql.CLAIM, {"batch": claim})
        claimed = conn.execute(raw_sql.CLAIM, {"batch": complete}).fetchall()
        found["raw completion"].plan = explained(
            conn, raw_sql.COMPLETE, ([row[0] for row in claimed],)
        )
    return list(found.values()), widths


def indexes(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = %s::regclass ORDER BY 1",
        (table,),
    ).fetchall()
    return [(str(name), str(definition)) for name, definition in rows]


# --- the report -----------------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def cpu_section(drains: dict[str, list[Drain]]) -> str:
    lines = [
        "## CPU per job (µs, median of the rounds)",
        "",
        "| | raw SQL | pgjobs | pgjobs - raw |",
        "| --- | ---: | ---: | ---: |",
    ]
    raw, ours = drains["raw"], drains["pgjobs"]

    def row(label: str, pick: Any, scale: float = 1e6, digits: int = 1) -> None:
        a, b = median([pick(d) for d in raw]), median([pick(d) for d in ours])
        lines.append(
            f"| {label} | {a * scale:,.{digits}f} | {b * scale:,.{digits}f} | "
            f"{(b - a) * scale:+,.{digits}f} |"
        )

    row("jobs/s", lambda d: d.rate, 1, 0)
    row("server (backends serving the drain)", lambda d: d.server)
    row("client (the worker process)", lambda d: d.client)
    row("total", lambda d: d.server + d.client)
    row("the worker's context switches per job", lambda d: d.switches, 1, 2)
    row("WAL bytes per job", lambda d: d.wal_bytes, 1, 0)
    row("WAL records per job", lambda d: d.wal_records, 1, 2)
    kinds = sorted({kind for d in raw + ours for kind in d.background})
    for kind in kinds:
        row(f"server background: {kind}", lambda d, k=kind: d.background.get(k, 0.0))
    lines += ["", "pgjobs' worker by thread (µs per job, median of the rounds):", ""]
    lines += ["| thread | µs/job |", "| --- | ---: |"]
    groups: dict[str, list[float]] = {}
    for d in ours:
        per_group: defaultdict[str, float] = defaultdict(float)
        for name, seconds in d.threads.items():
            per_group[group_of(name) if name != "(unnamed)" else name] += seconds
        for group, seconds in per_group.items():
            groups.setdefault(group, []).append(seconds)
    for group, values in sorted(groups.items(), key=lambda item: -median(item[1])):
        lines.append(f"| {group} | {us(median(values))} |")
    collected = [
        (sum(d.gc[g][0] for g in d.gc) / d.jobs * 1000, sum(d.gc[g][1] for g in d.gc) / d.jobs)
        for d in ours
        if d.gc
    ]
    if collected:
        lines += [
            "",
            "Garbage collections in pgjobs' worker: "
            f"{median([c for c, _ in collected]):.2f} per 1,000 jobs, "
            f"{us(median([s for _, s in collected]))} µs per job (in the threads above).",
        ]
    rates = ", ".join(f"{d.rate:,.0f}" for d in ours)
    raw_rates = ", ".join(f"{d.rate:,.0f}" for d in raw)
    lines += ["", f"Rounds (jobs/s): raw SQL {raw_rates}; pgjobs {rates}.", ""]
    return "\n".join(lines)


def census_section(census: Drain) -> str:
    lines = [
        f"## Statements of one pgjobs drain ({census.jobs:,} jobs, counted in the worker)",
        "",
        "| thread | statement | calls per 1,000 jobs | rows per call | ms per call (client) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    total = 0.0
    for thread, name, calls, rows, seconds in sorted(census.statements, key=lambda r: -r[2]):
        total += calls
        lines.append(
            f"| {thread} | {name} | {calls / census.jobs * 1000:,.1f} | {rows / calls:,.1f} | "
            f"{seconds / calls * 1000:.2f} |"
        )
    lines += [
        "",
        f"Round trips per 1,000 jobs: {total / census.jobs * 1000:,.1f}"
        f" (this drain ran at {census.rate:,.0f} jobs/s with the counting).",
        "",
    ]
    return "\n".join(lines)


def spy_section(path: Path, drains: list[Drain], spied: Drain) -> str:
    parts, functions = read_samples(path)
    cpu: dict[str, float] = {}
    for d in drains:
        for name, seconds in d.threads.items():
            cpu[group_of(name)] = cpu.get(group_of(name), 0.0) + seconds / len(drains)
    lines = [
        f"## py-spy: where each thread's samples fall ({spied.jobs:,} jobs, {spied.rate:,.0f}"
        " jobs/s while sampled)",
        "",
        "µs per job: the part's share of the group's samples times the group's CPU per job "
        "(the CPU rounds' mean).",
        "",
        "| thread group | part | samples | share | µs/job |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for group, counts in sorted(parts.items(), key=lambda item: -sum(item[1].values())):
        total = sum(counts.values())
        for part, samples in counts.most_common():
            share = samples / total
            lines.append(
                f"| {group} | {part} | {samples:,} | {share:.0%} | "
                f"{us(share * cpu.get(group, 0.0))} |"
            )
    lines += ["", "Top functions by self samples, per thread group:", ""]
    for group, counts in sorted(functions.items(), key=lambda item: -sum(item[1].values())):
        total = sum(counts.values())
        top = ", ".join(
            f"`{function}` {samples / total:.0%}" for function, samples in counts.most_common(8)
        )
        lines.append(f"- **{group}** ({total:,} samples): {top}")
    lines.append("")
    return "\n".join(lines)


def replay_section(found: list[Replayed], widths: dict[str, float]) -> str:
    lines = [
        "## Statements one at a time (server and client CPU, median of the calls)",
        "",
        "| statement | rows per call | server µs per call | server µs per row |"
        " client µs per call | client µs per row |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in found:
        rows = median(entry.rows)
        server, client = median(entry.server_us), median(entry.client_us)
        lines.append(
            f"| {entry.name} | {rows:,.0f} | {server:,.0f} | {server / max(rows, 1):.2f} | "
            f"{client:,.0f} | {client / max(rows, 1):.2f} |"
        )
    lines += ["", "Row widths (`pg_column_size`, bytes, mean): "]
    lines[-1] += "; ".join(f"{name} {width:.0f}" for name, width in widths.items()) + "."
    lines += ["", "### Plans (EXPLAIN (ANALYZE, BUFFERS), rolled back)", ""]
    for entry in found:
        if entry.plan:
            plan = "\n".join(shorten(line) for line in entry.plan.splitlines())
            lines += [f"{entry.name}:", "", "```", plan, "```", ""]
    return "\n".join(lines)


def shorten(line: str, width: int = 160) -> str:
    """A plan's line cut to `width` (an array of a thousand ids in a condition)."""
    return line if len(line) <= width else line[: width - 5] + " ...)"


def table_section(drains: dict[str, list[Drain]], index_list: list[tuple[str, str]]) -> str:
    lines = [
        "## Rows and indexes over a drain",
        "",
        "| relation | bytes grown per job, raw SQL | bytes grown per job, pgjobs |",
        "| --- | ---: | ---: |",
    ]
    raw, ours = drains["raw"][-1], drains["pgjobs"][-1]
    for name in sorted({*raw.table, *ours.table} - {"updates", "hot updates", "deletes"}):
        a, b = raw.table.get(name), ours.table.get(name)
        lines.append(
            f"| {name} | {'' if a is None else f'{a / raw.jobs:.1f}'} | "
            f"{'' if b is None else f'{b / ours.jobs:.1f}'} |"
        )
    for label, d in (("raw SQL", raw), ("pgjobs", ours)):
        updates = d.table.get("updates", 0)
        hot = d.table.get("hot updates", 0)
        deletes = d.table.get("deletes", 0)
        lines.append(
            f"\n{label}: {updates / d.jobs:.2f} row updates per job, "
            f"{hot / max(updates, 1):.0%} of them HOT; {deletes / d.jobs:.2f} row deletes"
            " per job."
        )
    lines += ["", f"Indexes of {LIVE} and {HISTORY}:", ""]
    lines += [f"- `{name}`: `{definition}`" for name, definition in index_list]
    lines.append("")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--py-spy", help="a py-spy binary (not a dependency of the project)")
    parser.add_argument("--out", type=Path, help="where py-spy's raw samples go")
    parser.add_argument("--spy-jobs", type=int, default=200_000, help="jobs of the sampled drain")
    parser.add_argument("--claim", type=int, default=460, help="replay: rows per claim")
    parser.add_argument("--complete", type=int, default=300, help="replay: rows per completion")
    parser.add_argument("--only", default="cpu,census,spy,replay", help="sections to run")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    only = set(args.only.split(","))
    started = time.monotonic()
    with ExitStack() as stack:
        files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgjobs-profile-")))
        say("starting a throwaway PostgreSQL cluster...")
        url = stack.enter_context(temporary_cluster())
        admin = stack.enter_context(psycopg.connect(url, autocommit=True))
        upgrade(url, schema=SCHEMA)
        raw_sql.install(url)
        version = one(admin, "SHOW server_version")
        print(
            f"# Drain profile: {args.jobs:,} no-op jobs, PostgreSQL {version}, "
            f"{os.cpu_count()} CPUs, raw SQL `{' '.join(RAW_SETTING)}`, pgjobs "
            f"`{' '.join(PGJOBS_SETTING)}`\n",
            flush=True,
        )
        drains: dict[str, list[Drain]] = {"raw": [], "pgjobs": []}
        if only & {"cpu", "spy"}:
            for number in range(args.rounds):
                for system in ("raw", "pgjobs") if number % 2 == 0 else ("pgjobs", "raw"):
                    d = drain(url, admin, system, args.jobs, files)
                    drains[system].append(d)
                    say(
                        f"  round {number + 1} {system}: {d.rate:,.0f} jobs/s, "
                        f"{us(d.server)} µs server, {us(d.client)} µs client"
                    )
            print(cpu_section(drains), flush=True)
            index_list = indexes(admin, LIVE) + indexes(admin, HISTORY)
            print(table_section(drains, index_list), flush=True)
        if "census" in only:
            census = drain(url, admin, "pgjobs", args.jobs, files, census=True)
            print(census_section(census), flush=True)
        if "spy" in only and args.py_spy:
            out = args.out or files
            out.mkdir(parents=True, exist_ok=True)
            samples = out / "pgjobs-drain.pyspy.txt"
            spied = drain(
                url, admin, "pgjobs", args.spy_jobs, files, py_spy=args.py_spy, spy_out=samples
            )
            print(spy_section(samples, drains["pgjobs"], spied), flush=True)
        if "replay" in only:
            found, widths = replay(url, admin, args.jobs, args.claim, args.complete)
            print(replay_section(found, widths), flush=True)
    say(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
