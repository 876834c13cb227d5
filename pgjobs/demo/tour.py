"""The tour itself: migrate a schema of its own, enqueue the sample jobs of
`pgjobs.demo.tasks` (some failing and retrying, one failing for good, one delayed, two
urgent), serve them with an in-process worker while `display` follows the queue, and
print what happened and what to try next. The jobs stay (until the next tour) for
`pgjobs web` to show.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import shlex
import sys
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql
from rich.console import Console

from pgjobs.app import App
from pgjobs.config import database_url_from_env, validate_schema
from pgjobs.demo import DEMO_QUEUE
from pgjobs.demo.display import Snapshot, watch
from pgjobs.demo.tasks import SAMPLES
from pgjobs.demo.tasks import app as demo_app
from pgjobs.embedded import default_home
from pgjobs.migrate import upgrade
from pgjobs.types import JobState
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.queues import QueueSpec

TIME_LIMIT = 60.0
SETTINGS = WorkerSettings(
    concurrency=4,
    queues=QueueSpec({DEMO_QUEUE: 1}),
    shutdown_timeout=5.0,
    poll_interval=0.5,
)
_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def run_tour(database_url: str | None, schema: str) -> bool:
    """Run the tour on `database_url` (None: the configured or embedded database) in
    `schema`, replacing the previous demo's jobs; True when every job ended as the
    samples say it should."""
    console = Console(highlight=False, markup=False, emoji=False, soft_wrap=True)
    app = demo_app
    # Validated here because App falls back to PGJOBS_SCHEMA or "pgjobs" for an empty name,
    # and the demo must never land in a real schema by accident.
    app.configure(database_url=database_url, schema=validate_schema(schema))
    try:
        return _run(console, app, database_url)
    finally:
        app.close()


def _run(console: Console, app: App, database_url: str | None) -> bool:
    url = app.database.url  # starts the embedded cluster when nothing else is configured
    embedded = database_url is None and database_url_from_env() is None
    where = f"the embedded PostgreSQL in {default_home() / 'pgdata'}" if embedded else url
    console.print("pgjobs demo: a job queue in PostgreSQL, on a small workload", style="bold")
    console.print(f"  database  {_without_password(where)}")
    upgrade(url, app.schema)
    # The demo's jobs are its queue's jobs; the worker serves no other queue, and only
    # these are cleared, so a schema that holds real jobs keeps them.
    with app.database.transaction() as conn:
        cleared = app.data.admin.delete_queue(conn, DEMO_QUEUE)
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
            elapsed = watch(console, app, total, started, TIME_LIMIT)
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
    others = sum(final.counts[row] for row in ("waiting", "scheduled", "claimed", "running"))
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
        if job.state is JobState.FAILED:
            console.print(
                f"  failed: job {job.id} {job.task} after {job.attempts} attempts, "
                f"last error: {job.last_error}",
                style="red",
            )
    table = _qualified_jobs_table(app.schema)
    where_options = _where_options(database_url, app.schema)
    query = f"SELECT state, count(*) FROM {table} GROUP BY 1;"
    if not _has_password(url):
        query = f"psql {shlex.quote(url)} -c {shlex.quote(query)}"
    console.print("\nWhat next", style="bold")
    console.print(f"  query the jobs table:  {query}")
    console.print(f"  inspect with pgjobs:   pgjobs stats{where_options}")
    console.print(f"  see the dashboard:     {_dashboard_command(where_options)}")
    console.print(
        "  use your own server:   export "
        "PGJOBS_DATABASE_URL=postgresql://user:password@host/dbname, then `pgjobs migrate` "
        "and `pgjobs work --app yourapp.tasks:app`"
    )


def _where_options(database_url: str | None, schema: str) -> str:
    """The options that point a pgjobs command at the demo's jobs: the schema, and the
    database when it was given on the command line (a password is not repeated)."""
    options = ""
    if database_url and database_url != database_url_from_env():
        shown = "URL" if _has_password(database_url) else shlex.quote(database_url)
        options += f" --database-url {shown}"
    return options + f" --schema {shlex.quote(schema)}"


def _dashboard_command(where_options: str) -> str:
    """`pgjobs web` on the demo's jobs, after installing the `web` extra if it is missing:
    the jobs stay until the next demo, for the dashboard to show."""
    command = f"pgjobs web{where_options}"
    if importlib.util.find_spec("starlette") is None:
        command = f"pip install 'pgjobs-queue[web]' (from a checkout: '.[web]') && {command}"
    return f"{command}, then open http://127.0.0.1:8080/"


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
