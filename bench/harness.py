"""What the benchmarks share: a query's one value, stopping a worker, a schema made and
dropped, pgjobs exported at an earlier revision, medians and spreads for the tables.

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
