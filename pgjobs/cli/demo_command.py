"""`pgjobs demo`: a self-contained tour that needs nothing but pgjobs installed.

It migrates a schema of its own, enqueues the sample jobs of `pgjobs.demo_tasks` (some
failing and retrying, one failing for good, one delayed, two urgent), serves them with an
in-process worker while a live display follows the queue, and prints what happened.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

import psycopg
import typer
from psycopg import sql
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgjobs import admin
from pgjobs.app import App
from pgjobs.cli.common import DatabaseUrlOption, reports_errors
from pgjobs.config import database_url_from_env, validate_schema
from pgjobs.demo_tasks import DEMO_QUEUE, DEMO_SCHEMA, SAMPLES
from pgjobs.demo_tasks import app as demo_app
from pgjobs.embedded import default_home
from pgjobs.migrate import upgrade
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.queues import QueueSpec

TIME_LIMIT = 60.0
REFRESH = 0.25
PLAIN_REFRESH = 1.0
SETTINGS = WorkerSettings(
    concurrency=4,
    queues=QueueSpec({DEMO_QUEUE: 1}),
    shutdown_timeout=5.0,
    poll_interval=0.5,
)
# Display order: `available` is split into runnable now and waiting for its `run_at`.
ROWS = (
    ("waiting", "available, runnable now"),
    ("scheduled", "available, delayed or backing off before a retry"),
    ("running", "claimed by the worker"),
    ("completed", "done"),
    ("failed", "out of attempts"),
    ("cancelled", "cancelled by someone"),
)
_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class Snapshot:
    """The demo's jobs at one moment."""

    jobs: list[dict[str, Any]]
    counts: Counter[str]

    @classmethod
    def read(cls, app: App, total: int) -> Snapshot:
        jobs = admin.list_jobs(app, queues=[DEMO_QUEUE], limit=max(total, 1))
        now = datetime.now(timezone.utc)
        counts: Counter[str] = Counter()
        for job in jobs:
            state = job["state"]
            if state == "available":
                state = "scheduled" if job["run_at"] > now else "waiting"
            counts[state] += 1
        return cls(jobs, counts)

    @property
    def finished(self) -> int:
        return self.counts["completed"] + self.counts["failed"] + self.counts["cancelled"]

    @property
    def retries(self) -> int:
        """Attempts started beyond each job's first."""
        return sum(max(job["attempts"] - 1, 0) for job in self.jobs)

    def line(self, elapsed: float, total: int) -> str:
        """One plain progress line, for output that is not a terminal."""
        counts = "  ".join(f"{name} {self.counts[name]}" for name, _ in ROWS[:5])
        return (
            f"{elapsed:5.1f}s  {counts}  retries {self.retries}  ({self.finished}/{total} finished)"
        )


@reports_errors
def demo(
    database_url: DatabaseUrlOption = None,
    schema: Annotated[
        str,
        typer.Option("--schema", help="Schema for the demo's jobs; keep it apart from real jobs."),
    ] = DEMO_SCHEMA,
) -> None:
    """A tour: enqueue sample jobs (some fail and retry), run a worker live, summarise.

    Uses the embedded local PostgreSQL unless a database is configured, and its own
    schema, pgjobs_demo; each run replaces the previous demo's jobs.
    """
    console = Console(highlight=False, markup=False, emoji=False, soft_wrap=True)
    app = demo_app
    # Validated here because App falls back to PGJOBS_SCHEMA or "pgjobs" for an empty name,
    # and the demo must never land in a real schema by accident.
    app.configure(database_url=database_url, schema=validate_schema(schema))
    try:
        expected_ok = _run_tour(console, app, database_url)
    finally:
        app.close()
    if not expected_ok:
        raise typer.Exit(1)


def _run_tour(console: Console, app: App, database_url: str | None) -> bool:
    """The tour itself; True when every job ended as the samples say it should."""
    url = app.database.url  # starts the embedded cluster when nothing else is configured
    embedded = database_url is None and database_url_from_env() is None
    where = f"the embedded PostgreSQL in {default_home() / 'pgdata'}" if embedded else url
    console.print("pgjobs demo: a job queue in PostgreSQL, on a small workload", style="bold")
    console.print(f"  database  {_without_password(where)}")
    upgrade(url, app.schema)
    # The demo's jobs are its queue's jobs; the worker serves no other queue, and only
    # these are cleared, so a schema that holds real jobs keeps them.
    with app.database.transaction() as conn:
        cleared = conn.execute(app.queries.delete_queue_jobs, {"queue": DEMO_QUEUE}).rowcount
    again = f"; {cleared} jobs of the last demo cleared" if cleared else ""
    console.print(f"  schema    {app.schema} (migrated{again})\n")

    items = [item for batch in SAMPLES for item in batch.items()]
    app.enqueue_many(None, items)
    total = len(items)
    expected_failed = sum(len(batch.calls) for batch in SAMPLES if batch.ends_failed)
    console.print(f"Enqueued {total} jobs in one transaction:", style="bold")
    width = max(len(batch.task.name) for batch in SAMPLES)
    for batch in SAMPLES:
        console.print(f"  {len(batch.calls):3} x {batch.task.name:<{width}}  {batch.note}")
    b = app.backoff
    console.print(
        f"\nRunning a worker in this process: {SETTINGS.concurrency} threads, woken by "
        f"NOTIFY, retry backoff {b.base:g} s doubling up to {b.cap:g} s. "
        "Ctrl-C stops it cleanly.\n",
    )

    worker = Worker(app, SETTINGS)
    with _worker_logs_silenced():
        started = time.monotonic()
        worker.start()
        try:
            elapsed = _watch(console, app, total, started)
        except KeyboardInterrupt:
            print("pgjobs demo: interrupted; stopping the worker", file=sys.stderr)
            raise
        finally:
            stopped_cleanly = _stop(worker)
    final = Snapshot.read(app, total)
    in_time = final.finished == total
    expected = (
        in_time
        and final.counts["failed"] == expected_failed
        and final.counts["completed"] == total - expected_failed
    )
    _summarise(console, app, url, database_url, final, total, elapsed, in_time)
    if in_time and not expected:
        console.print(
            f"expected {total - expected_failed} completed and {expected_failed} failed: "
            "did something else touch the demo's jobs?",
            style="red",
        )
    if not stopped_cleanly:
        console.print("the worker could not write every outcome before stopping", style="red")
    return expected and stopped_cleanly


def _watch(console: Console, app: App, total: int, started: float) -> float:
    """Follow the queue until every job is finished or the time limit passes; returns
    the seconds that took."""
    if not console.is_terminal:
        return _watch_plain(app, total, started)
    progress = Progress(
        TextColumn("finished"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("jobs", total=total)
    snapshot = Snapshot.read(app, total)
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            progress.update(bar, completed=snapshot.finished)
            live.update(Group(_state_table(snapshot), progress))
            elapsed = time.monotonic() - started
            if snapshot.finished >= total or elapsed > TIME_LIMIT:
                return elapsed
            time.sleep(REFRESH)
            snapshot = Snapshot.read(app, total)


def _watch_plain(app: App, total: int, started: float) -> float:
    """The same as `_watch`, as one printed line a second."""
    next_line = started
    while True:
        snapshot = Snapshot.read(app, total)
        elapsed = time.monotonic() - started
        done = snapshot.finished >= total or elapsed > TIME_LIMIT
        if done or time.monotonic() >= next_line:
            print(snapshot.line(elapsed, total), flush=True)
            next_line += PLAIN_REFRESH
        if done:
            return elapsed
        time.sleep(REFRESH)


def _stop(worker: Worker) -> bool:
    """Stop claiming, let running jobs end and put back the rest, so that nothing is left
    running even on Ctrl-C; a second Ctrl-C meanwhile cuts the wait short."""
    worker.request_stop()
    try:
        return worker.shutdown() == 0
    except KeyboardInterrupt:
        worker.request_stop()  # a second request makes the shutdown immediate
        worker.shutdown()
        raise


def _state_table(snapshot: Snapshot) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("state")
    table.add_column("jobs", justify="right")
    table.add_column("")
    styles = {"running": "yellow", "completed": "green", "failed": "red"}
    for name, meaning in ROWS:
        if name == "cancelled" and not snapshot.counts[name]:
            continue
        table.add_row(name, str(snapshot.counts[name]), meaning, style=styles.get(name))
    table.add_row("retries", str(snapshot.retries), "attempts after a failure", style="dim")
    return table


def _summarise(
    console: Console,
    app: App,
    url: str,
    database_url: str | None,
    final: Snapshot,
    total: int,
    elapsed: float,
    in_time: bool,
) -> None:
    console.print()
    if in_time:
        console.print(f"All {total} jobs finished in {elapsed:.1f} s.", style="bold")
    else:
        console.print(
            f"Stopped at the {TIME_LIMIT:g} s time limit with {total - final.finished} of "
            f"{total} jobs unfinished (put back in the queue).",
            style="bold red",
        )
    counts = "  ".join(f"{state} {final.counts[state]}" for state in ("completed", "failed"))
    others = final.counts["waiting"] + final.counts["scheduled"] + final.counts["running"]
    if others:
        counts += f"  unfinished {others}"
    if final.counts["cancelled"]:
        counts += f"  cancelled {final.counts['cancelled']}"
    failed_attempts = final.retries + final.counts["failed"]
    console.print(f"  {counts}")
    console.print(
        f"  retries {final.retries} (after {failed_attempts} failed attempts, "
        "each recorded in the job's errors column)"
    )
    for job in final.jobs:
        if job["state"] == "failed":
            console.print(
                f"  failed: job {job['id']} {job['task']} after {job['attempts']} attempts, "
                f"last error: {job['last_error']}",
                style="red",
            )
    table = _qualified_jobs_table(app.schema)
    stats = "pgjobs stats"
    if database_url and database_url != database_url_from_env():
        shown = "URL" if _has_password(database_url) else shlex.quote(database_url)
        stats += f" --database-url {shown}"
    stats += f" --schema {shlex.quote(app.schema)}"
    query = f"SELECT state, count(*) FROM {table} GROUP BY 1;"
    if not _has_password(url):
        query = f"psql {shlex.quote(url)} -c {shlex.quote(query)}"
    console.print("\nWhat next", style="bold")
    console.print(f"  query the jobs table:  {query}")
    console.print(f"  inspect with pgjobs:   {stats}")
    console.print(
        "  use your own server:   export "
        "PGJOBS_DATABASE_URL=postgresql://user:password@host/dbname, then `pgjobs migrate` "
        "and `pgjobs work --app yourapp.tasks:app`"
    )


def _qualified_jobs_table(schema: str) -> str:
    """`schema.jobs`, quoting the schema only when SQL needs it."""
    if _PLAIN_IDENTIFIER.fullmatch(schema):
        return f"{schema}.jobs"
    return sql.Identifier(schema, "jobs").as_string()


def _has_password(url: str) -> bool:
    try:
        return bool(psycopg.conninfo.conninfo_to_dict(url).get("password"))
    except psycopg.ProgrammingError:
        return True


def _without_password(where: str) -> str:
    """A URL fit to print: its password, if any, replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", where)


@contextlib.contextmanager
def _worker_logs_silenced() -> Iterator[None]:
    """The worker logs every failed attempt; the live display and summary show them
    instead, so its log lines would only tear the display."""
    logger = logging.getLogger("pgjobs")
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate = saved
