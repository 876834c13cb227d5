"""`pgjobs stats`, `pgjobs list` and `pgjobs show ID`: reading the queue."""

from __future__ import annotations

import json
import textwrap
from contextlib import closing
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from pgjobs import admin
from pgjobs.cli.common import DatabaseUrlOption, JsonOption, SchemaOption, open_app, reports_errors
from pgjobs.cli.output import (
    first_line,
    format_age,
    format_time,
    make_table,
    print_json,
    print_rich,
)
from pgjobs.schema import STATES

_STATE_LIST = ", ".join(STATES)


@reports_errors
def stats(
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Jobs by queue and state, the oldest waiting job's age, and recent throughput.

    "Oldest waiting" is how long the longest-overdue available job has been runnable.
    Throughput counts jobs completed or failed in the last 1 and 5 minutes.
    """
    with closing(open_app(database_url, schema)) as app:
        queues = admin.queue_stats(app)
        schema_name = app.schema
    totals = _totals(queues)
    if as_json:
        print_json(
            {
                "queues": [{"queue": q.queue, **_stats_json(q)} for q in queues],
                "totals": _stats_json(totals),
                "throughput": {
                    "finished_last_1m": totals.finished_last_minute,
                    "finished_last_5m": totals.finished_last_5_minutes,
                    "jobs_per_second_1m": totals.finished_last_minute / 60,
                    "jobs_per_second_5m": totals.finished_last_5_minutes / 300,
                },
            }
        )
        return
    if not queues:
        print_rich(f"no jobs in schema {schema_name!r}")
        return
    table = make_table(
        "queue",
        *STATES,
        "oldest waiting",
        "finished 1m",
        "finished 5m",
        right=(*STATES, "oldest waiting", "finished 1m", "finished 5m"),
    )
    for row in [*queues, totals]:
        table.add_row(
            Text(row.queue, style="bold" if row is totals else ""),
            *(str(row.counts[state]) for state in STATES),
            format_age(row.oldest_waiting),
            str(row.finished_last_minute),
            str(row.finished_last_5_minutes),
            end_section=row is queues[-1],
        )
    print_rich(
        table,
        f"throughput: {_jobs(totals.finished_last_minute)} finished in the last minute "
        f"({totals.finished_last_minute / 60:.2f}/s), {totals.finished_last_5_minutes} in the "
        f"last 5 minutes ({totals.finished_last_5_minutes / 300:.2f}/s)",
    )


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _totals(queues: list[admin.QueueStats]) -> admin.QueueStats:
    waits = [q.oldest_waiting for q in queues if q.oldest_waiting is not None]
    return admin.QueueStats(
        queue="total",
        counts={state: sum(q.counts[state] for q in queues) for state in STATES},
        oldest_waiting=max(waits, default=None),
        finished_last_minute=sum(q.finished_last_minute for q in queues),
        finished_last_5_minutes=sum(q.finished_last_5_minutes for q in queues),
    )


def _stats_json(row: admin.QueueStats) -> dict[str, Any]:
    return {
        "counts": row.counts,
        "total": row.total,
        "oldest_waiting_seconds": row.oldest_waiting,
        "finished_last_1m": row.finished_last_minute,
        "finished_last_5m": row.finished_last_5_minutes,
    }


@reports_errors
def list_jobs(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help=f"Only jobs in this state ({_STATE_LIST}). Repeat for several.",
        ),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", metavar="QUEUE", help="Only jobs of this queue. Repeatable."),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", metavar="TASK", help="Only jobs of this task name. Repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many jobs.")] = 50,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first.

    Filters combine: `--state failed --state cancelled --queue mail` lists the failed
    and cancelled jobs of queue mail.
    """
    admin.check_states(state or ())
    with closing(open_app(database_url, schema)) as app:
        jobs = admin.list_jobs(
            app, states=state or (), queues=queue or (), tasks=task or (), limit=limit
        )
    if as_json:
        print_json(jobs)
        return
    if not jobs:
        print_rich("no matching jobs")
        return
    table = make_table(
        "id",
        "queue",
        "task",
        "state",
        "priority",
        "attempts",
        "run_at",
        "created_at",
        "last error",
        right=("id", "priority", "attempts"),
    )
    for job in jobs:
        table.add_row(
            str(job["id"]),
            job["queue"],
            job["task"],
            job["state"],
            str(job["priority"]),
            f"{job['attempts']}/{job['max_attempts']}",
            format_time(job["run_at"]),
            format_time(job["created_at"]),
            first_line(job["last_error"]),
        )
    print_rich(table)


@reports_errors
def show(
    job_id: Annotated[int, typer.Argument(metavar="ID", help="The job's id.")],
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job: every column, then its attempt history with tracebacks."""
    with closing(open_app(database_url, schema)) as app:
        job = admin.get_job(app, job_id)
    if as_json:
        print_json(job)
        return
    errors = job["errors"]
    if not errors:
        print_rich(_job_fields(job), "", "no failed attempts")
        return
    print_rich(
        _job_fields(job),
        "",
        Text(f"attempt history ({len(errors)})", style="bold"),
        *_attempts(errors),
    )


def _job_fields(job: dict[str, Any]) -> Table:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for name, value in job.items():
        if name in ("errors", "max_attempts"):
            continue
        if name == "attempts":
            shown = f"{value} of {job['max_attempts']}"
        elif name == "payload":
            shown = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, datetime):
            shown = format_time(value)
        else:
            shown = "-" if value is None else str(value)
        fields.add_row(name, shown)
    return fields


def _entry_time(value: Any) -> str:
    """An error entry's `at`, stored as JSON text, shown like the other timestamps."""
    try:
        return format_time(datetime.fromisoformat(value))
    except (TypeError, ValueError):
        return str(value or "-")


def _attempts(errors: list[dict[str, Any]]) -> list[RenderableType]:
    """A table of the failed attempts, then each attempt's traceback, indented."""
    table = make_table("attempt", "at", "worker", "error", right=("attempt",))
    for entry in errors:
        table.add_row(
            str(entry.get("attempt", "?")),
            _entry_time(entry.get("at")),
            str(entry.get("worker") or "-"),
            first_line(entry.get("error"), width=100),
        )
    shown: list[RenderableType] = [table]
    for entry in errors:
        traceback = (entry.get("traceback") or "").rstrip()
        if traceback:
            shown.append("")
            shown.append(Text(f"traceback of attempt {entry.get('attempt', '?')}:", style="bold"))
            shown.append(Text(textwrap.indent(traceback, "  ")))
    return shown
