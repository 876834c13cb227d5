"""What a server crash mid-drain does to claims: jobs that ran twice, and whether they say so.

    python bench/crash.py                 # 3 runs of each claim commit mode
    python bench/crash.py --runs 5 --jobs 60000 --kill-after 15000

Each run starts a cluster of its own with fsync and synchronous commit on, enqueues
`--jobs` jobs of `tests/crash_app.py` (each run of a task body appends its job id to a
file, outside the database), and drains them with one worker (`--concurrency 10`). Once
`--kill-after` jobs ran, the postmaster is killed with SIGKILL and the server started
again (it replays its WAL). When every job is completed, the table counts the jobs whose
task ran more than once, and those among them with no entry in `errors`: a run that
nothing in the database explains. The worker's default claims commit durably;
`--async-claim-commit` lets them commit without waiting for the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from pgjobs import App
from pgjobs.embedded import LocalCluster
from pgjobs.migrate import upgrade

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "crash"
MODES = {"durable": (), "async": ("--async-claim-commit",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=60_000)
    parser.add_argument("--kill-after", type=int, default=15_000)
    args = parser.parse_args()
    table = Table(title="Jobs run twice after a server crash mid-drain (fsync on)")
    for column in ("claims", "run", "ran before kill", "ran twice", "twice, no error entry"):
        table.add_column(column, justify="right")
    for run in range(1, args.runs + 1):
        for mode, options in MODES.items():
            before, twice, unexplained = crash_once(args.jobs, args.kill_after, options)
            table.add_row(mode, str(run), f"{before:,}", f"{twice:,}", f"{unexplained:,}")
            print(f"run {run} {mode}: {twice} ran twice, {unexplained} unexplained", flush=True)
    Console().print(table)


def crash_once(jobs: int, kill_after: int, options: tuple[str, ...]) -> tuple[int, int, int]:
    """One drain with a crash: (runs before the kill, jobs run twice, unexplained)."""
    root = Path(tempfile.mkdtemp(prefix="pgjobs-crash-"))
    cluster = LocalCluster(root / "pgdata")
    runs_file = root / "runs"
    try:
        url = cluster.ensure_running()
        upgrade(url, SCHEMA)
        app = App(url, schema=SCHEMA)
        app.enqueue_many(None, [("touch", {})] * jobs)
        app.close()
        command = [sys.executable, "-m", "pgjobs", "work", "--app", "tests.crash_app:app"]
        settings = ["--concurrency", "10", "--rescue-after", "5", "--log-level", "WARNING"]
        worker = subprocess.Popen(
            [*command, "--database-url", url, "--schema", SCHEMA, *settings, *options],
            cwd=REPO_ROOT,
            env={**os.environ, "PGJOBS_RUNS_FILE": str(runs_file)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while sum(runs_of(runs_file).values()) < kill_after:
                time.sleep(0.005)
            pid = cluster.status().pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            before = sum(runs_of(runs_file).values())
            restart(cluster)
            while completed(url) < jobs:
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        ran = runs_of(runs_file)
        twice = [job_id for job_id, count in ran.items() if count > 1]
        return before, len(twice), len(unexplained(url, twice))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def runs_of(path: Path) -> Counter[int]:
    if not path.exists():
        return Counter()
    return Counter(int(line.split()[0]) for line in path.read_text().splitlines() if line)


def restart(cluster: LocalCluster) -> None:
    """Start the server again once the killed postmaster and its backends have gone."""
    deadline = time.monotonic() + 60
    while cluster.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    while True:
        try:
            cluster.ensure_running()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def completed(url: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE state = 'completed'")
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(query.format(sql.Identifier(SCHEMA, "jobs"))).fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def unexplained(url: str, job_ids: list[int]) -> list[int]:
    """Of these jobs, those with nothing in `errors`."""
    query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s) AND errors = '[]'::jsonb")
    with psycopg.connect(url) as conn:
        rows = conn.execute(query.format(sql.Identifier(SCHEMA, "jobs")), [job_ids]).fetchall()
    return [row[0] for row in rows]


if __name__ == "__main__":
    main()
