"""What the benchmarks share: a query's one value, stopping a worker, a schema made and
dropped, pgjobs exported at an earlier revision, medians and spreads for the tables, the
jobs tables of a schema of either shape (from migration 0012 on `jobs_live` and
`jobs_history` under the view `jobs`, before it the one table `jobs`), and a drain's
table work: emptied, filled with jobs due tomorrow, made due at once, waited for, and its
rate read back.

The benchmarks run as scripts from this folder, so they import this as `harness`.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STARTUP_TIMEOUT = 60.0
DRAIN_TIMEOUT = 300.0  # seconds a drain may take before the run gives up on it


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def scalar(url: str, query: sql.Composed | str, params: Sequence[Any] = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def migrate(url: str, schema: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "pgjobs", "migrate", "--database-url", url, "--schema", schema]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=HERE)


def drop(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def export_before(revision: str, into: Path) -> dict[str, str]:
    """pgjobs at `revision` (its package, migrations inside it as in the wheel) in `into`;
    the environment that imports it first."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "pgjobs", "migrations"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "migrations").rename(into / "pgjobs" / "migrations")
    env = dict(os.environ, PYTHONPATH=str(into))
    where = subprocess.run(
        [sys.executable, "-c", "import pgjobs; print(pgjobs.__file__)"],
        check=True, capture_output=True, text=True, env=env, cwd=HERE,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(into)):
        raise RuntimeError(f"--before: the workers would import {where}, not {into}")
    return env


@contextmanager
def started_workers(
    url: str,
    schema: str,
    processes: int,
    *,
    app: str,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    settle: float = 1.0,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`processes` `pgjobs work` processes serving `app` (a module of this folder) on
    `schema`, up (registered) and given `settle` seconds more for their first claims and
    beats; SIGTERM (and waited for) on the way out."""
    command = [
        sys.executable, "-m", "pgjobs", "work", "--app", app, "--database-url", url,
        "--schema", schema, "--log-level", "WARNING", *options,
    ]  # fmt: skip
    registered = sql.SQL("SELECT count(*) FROM {} WHERE pid = ANY(%s)").format(
        sql.Identifier(schema, "workers")
    )
    environment = dict(os.environ if env is None else env)
    with ExitStack() as stack:
        started: list[subprocess.Popen[bytes]] = []
        for _ in range(processes):
            process = subprocess.Popen(command, cwd=HERE, env=environment, start_new_session=True)
            stack.callback(stop, process)
            started.append(process)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while scalar(url, registered, [[p.pid for p in started]]) < processes:
            if any(p.poll() is not None for p in started) or time.monotonic() > deadline:
                raise RuntimeError(f"workers {command} did not start")
            time.sleep(0.1)
        time.sleep(settle)
        yield started


# --- the jobs tables ---------------------------------------------------------------------

# The final states, each with a partition of `jobs_history` per UTC day (migration 0012).
FINISHED = ("completed", "failed", "cancelled")


def jobs_of(schema: str) -> sql.Identifier:
    """Every job of `schema`, to read: from migration 0012 on the view `jobs` (its
    tables `jobs_live` and `jobs_history`), before it (pgjobs at --before) the table."""
    return sql.Identifier(schema, "jobs")


def split(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether `schema` keeps its finished jobs apart (migration 0012 on: `jobs_live`,
    `jobs_history`, and `jobs` a view over both, whose INSTEAD OF triggers write row by
    row and whose FOR UPDATE locks nothing), or all of them in the one table `jobs`
    (pgjobs at an earlier revision, exported with `export_before`)."""
    live = sql.Identifier(schema, "jobs_live").as_string(conn)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [live]).fetchone()
    return bool(row and row[0])


def live_of(conn: psycopg.Connection[Any], schema: str) -> sql.Identifier:
    """The table of `schema`'s waiting, blocked and running jobs, which bulk inserts and
    updates write: `jobs_live`, or `jobs` before migration 0012."""
    return sql.Identifier(schema, "jobs_live" if split(conn, schema) else "jobs")


def tables_of(conn: psycopg.Connection[Any], schema: str) -> list[sql.Identifier]:
    """The tables of `schema`'s jobs, to empty and to vacuum: `jobs_live` and
    `jobs_history` (the sequence of the ids is `jobs_live`'s), or `jobs`."""
    if split(conn, schema):
        return [sql.Identifier(schema, "jobs_live"), sql.Identifier(schema, "jobs_history")]
    return [sql.Identifier(schema, "jobs")]


def vacuum(conn: psycopg.Connection[Any], schema: str) -> None:
    """VACUUM ANALYZE the jobs tables of `schema` (VACUUM skips a view, with a warning
    only); `conn` in autocommit."""
    for table in tables_of(conn, schema):
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))


def make_partitions(
    conn: psycopg.Connection[Any], schema: str, *, back: str = "0", ahead: str = "1 day"
) -> None:
    """The partitions of `jobs_history` of every final state for each UTC day from `back`
    ago to `ahead` from now (intervals), made where missing: a statement inserting into
    `jobs_history` finds only the partitions that existed when it began."""
    made = sql.SQL(
        "SELECT count({}(s.state, d.day)) FROM unnest(%s::text[]) AS s(state),"
        " generate_series(date_trunc('day', now() - %s::interval, 'UTC'),"
        " now() + %s::interval, interval '24 hours') AS d(day)"
    ).format(sql.Identifier(schema, "jobs_history_partition"))
    conn.execute(made, [list(FINISHED), back, ahead])


def next_id(schema: str) -> sql.Composed:
    """An SQL expression drawing a job id from `jobs_live`'s sequence, for rows inserted
    into `jobs_history` (whose `id` has no default)."""
    live = sql.Identifier(schema, "jobs_live").as_string()
    return sql.SQL("nextval(pg_get_serial_sequence({}, 'id'))").format(sql.Literal(live))


# --- a drain's table work -----------------------------------------------------------------


def reset(url: str, schema: str) -> None:
    """Empty the jobs tables (and the workflows table, where the schema has one), fresh
    statistics, a checkpoint: every measurement starts alike. The history's partitions of
    today and tomorrow are made beforehand, as the workers keep them: a drain's first
    completions do not make them. Other tables (a limits benchmark's log of rate-limited
    starts) are kept."""
    with psycopg.connect(url, autocommit=True) as conn:
        has_workflows = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [f"{schema}.workflows"]
        ).fetchone()
        names = tables_of(conn, schema)
        if has_workflows and has_workflows[0]:
            names.append(sql.Identifier(schema, "workflows"))
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(names)))
        if split(conn, schema):
            make_partitions(conn, schema)
        for name in names:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
        conn.execute("CHECKPOINT")


def fill(
    url: str, schema: str, counts: Mapping[str, int], *, meta: sql.Composable | None = None
) -> None:
    """{task: count} jobs due tomorrow (the workers leave them alone until `make_due`),
    each with arguments {"n": its number}; `meta`, an SQL expression, gives each job's
    `meta`."""
    with psycopg.connect(url, autocommit=True) as conn:
        live = live_of(conn, schema)
        insert = sql.SQL(
            "INSERT INTO {} (task, payload, run_at{}) SELECT %s, jsonb_build_object('n', g),"
            " now() + interval '1 day'{} FROM generate_series(1, %s) AS g"
        ).format(
            live,
            sql.SQL("") if meta is None else sql.SQL(", meta"),
            sql.SQL("") if meta is None else sql.SQL(", ") + meta,
        )
        for task, count in counts.items():
            conn.execute(insert, [task, count])
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(live))
        conn.execute("CHECKPOINT")


def make_due(url: str, schemas: Sequence[str], *, first: str | None = None) -> None:
    """Every waiting job due now (those of task `first` a second earlier: first in line),
    in one transaction that wakes the workers as an insert would. Blocked workflow steps
    stay as they are."""
    from pgjobs.data.sql import notify_channel

    due = sql.SQL(
        "UPDATE {} SET run_at = now() - CASE WHEN task = %s THEN interval '1 second'"
        " ELSE interval '0' END WHERE state = 'available'"
    )
    with psycopg.connect(url) as conn:
        lives = [live_of(conn, schema) for schema in schemas]
        for schema, live in zip(schemas, lives, strict=True):
            conn.execute(due.format(live), [first])
            conn.execute("SELECT pg_notify(%s, 'default')", [notify_channel(schema)])


def wait_drained(
    url: str,
    schema: str,
    running: Sequence[subprocess.Popen[bytes]],
    *,
    blocked: bool = False,
    but_task: str | None = None,
    timeout: float = DRAIN_TIMEOUT,
    every: float = 0.02,
) -> None:
    """Until no job of `schema` waits or runs (nor is `blocked`, when asked), but those of
    `but_task`, left waiting on purpose; fails when a worker exits or `timeout` passes."""
    states = ["available", "running", *(["blocked"] if blocked else [])]
    query = sql.SQL("SELECT count(*) FROM {} WHERE state = ANY(%s) AND task IS DISTINCT FROM %s")
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        unfinished = query.format(live_of(conn, schema))  # only live jobs wait or run
        while (conn.execute(unfinished, [states, but_task]).fetchone() or (0,))[0]:
            if any(p.poll() is not None for p in running) or time.monotonic() > deadline:
                raise RuntimeError(f"the workers on {schema} stopped or stalled")
            time.sleep(every)


def rate(url: str, schema: str, count: int, task: str | None = None) -> float:
    """Jobs (of `task`, or all) per second over the first claim to the last outcome; all
    `count` must have completed."""
    query = sql.SQL(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at)),"
        " count(*) FILTER (WHERE state = 'completed') FROM {}"
        " WHERE %s::text IS NULL OR task = %s"
    ).format(jobs_of(schema))
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, [task, task]).fetchone()
    what = task or "jobs"
    assert row is not None and row[1] == count, f"{row[1] if row else 0} of {count} {what}"
    return count / float(row[0])
