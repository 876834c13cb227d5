"""`pgjobs stats`, `pgjobs list` and `pgjobs show ID`: reading the queue.

JSON output (`--json`) is the jobs table's own shape: `list` prints an array and `show`
one object, each a job with every column of `<schema>.jobs` (`Job.as_dict()`: `result`
and a workflow step's `workflow_id`, `step`, `depends_on`, `run_if` too), timestamps in
ISO 8601.
"""

from __future__ import annotations

import json
import textwrap
from contextlib import closing
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgjobs.bounds import BIGINT_MAX
from pgjobs.cli.common import DatabaseUrlOption, JsonOption, SchemaOption, open_app
from pgjobs.cli.output import (
    console,
    first_line,
    format_age,
    format_time,
    make_table,
    print_json,
    print_rich,
    printable,
    table_class,
)
from pgjobs.types import STATES, JobState

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import JustifyMethod, RenderableType
    from rich.table import Column, Table
    from rich.text import Text

    from pgjobs.data.inspect import QueueStats
    from pgjobs.types import Job

_STATE_LIST = ", ".join(state.value for state in STATES)
# From this many columns on, `list` adds the queue, priority and timestamps by itself.
WIDE_TERMINAL = 150
_UNBOUNDED = 100_000
_STATE_STYLES = {
    JobState.RUNNING: "yellow",
    JobState.COMPLETED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "dim",
    JobState.BLOCKED: "cyan",
}
# Columns `show` prints only when set: a result, what makes a job a workflow's step, and
# the metadata enqueue middleware or `meta=` gave it.
_WHEN_SET = ("result", "workflow_id", "step", "depends_on", "run_if", "meta")


def stats(
    seconds: Annotated[
        float | None,
        typer.Argument(metavar="[SECONDS]", help="With --watch: seconds between redraws."),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="Redraw in place every SECONDS (default 2) until Ctrl-C."),
    ] = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Jobs by queue and state, the oldest waiting job's age, and recent throughput.

    "Oldest waiting" is how long the longest-overdue available job has been runnable.
    Throughput counts jobs completed or failed in the last 1 and 5 minutes.
    `pgjobs stats --watch 5` redraws the table every 5 seconds until Ctrl-C.
    """
    from pgjobs import admin

    if watch or seconds is not None:
        from pgjobs.cli.watch import watch_interval, watch_live

        every = watch_interval(seconds, watch=watch, as_json=as_json)
        with closing(open_app(database_url, schema)) as app:
            title = f"pgjobs stats, schema {app.schema!r}"
            watch_live(lambda: _stats_view(admin.queue_stats(app), app.schema), every, title)
        return
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
    print_rich(*_stats_view(queues, schema_name))


def _stats_view(queues: list[QueueStats], schema: str) -> list[RenderableType]:
    """The stats table and the throughput line (or a line saying there are no jobs)."""
    from rich.text import Text

    if not queues:
        return [f"no jobs in schema {schema!r}"]
    totals = _totals(queues)
    counted = ("oldest waiting", "finished 1m", "finished 5m")
    names = [state.value for state in STATES]
    table = make_table("queue", *names, *counted, right=(*names, *counted))
    for row in [*queues, totals]:
        table.add_row(
            Text(row.queue, style="bold" if row is totals else ""),
            *(str(row.counts[state]) for state in STATES),
            format_age(row.oldest_waiting),
            str(row.finished_last_minute),
            str(row.finished_last_5_minutes),
            end_section=row is queues[-1],
        )
    return [
        table,
        f"throughput: {_jobs(totals.finished_last_minute)} finished in the last minute "
        f"({totals.finished_last_minute / 60:.2f}/s), {totals.finished_last_5_minutes} in the "
        f"last 5 minutes ({totals.finished_last_5_minutes / 300:.2f}/s)",
    ]


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _totals(queues: list[QueueStats]) -> QueueStats:
    from pgjobs.data.inspect import QueueStats

    waits = [q.oldest_waiting for q in queues if q.oldest_waiting is not None]
    return QueueStats(
        queue="total",
        counts={state: sum(q.counts[state] for q in queues) for state in STATES},
        oldest_waiting=max(waits, default=None),
        finished_last_minute=sum(q.finished_last_minute for q in queues),
        finished_last_5_minutes=sum(q.finished_last_5_minutes for q in queues),
    )


def _stats_json(row: QueueStats) -> dict[str, Any]:
    return {
        "counts": {state.value: count for state, count in row.counts.items()},
        "total": row.total,
        "oldest_waiting_seconds": row.oldest_waiting,
        "finished_last_1m": row.finished_last_minute,
        "finished_last_5m": row.finished_last_5_minutes,
    }


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
    workflow: Annotated[
        int | None,
        typer.Option("--workflow", metavar="ID", help="Only the steps of this workflow."),
    ] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, max=BIGINT_MAX, help="Show at most this many jobs.")
    ] = 50,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide",
            help="Add the queue, priority, created and finished columns, and shorten "
            f"nothing (the columns come by themselves on a terminal {WIDE_TERMINAL} "
            "columns wide).",
        ),
    ] = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first.

    Filters combine: `--state failed --state cancelled --queue mail` lists the failed
    and cancelled jobs of queue mail; `--workflow 7` the steps of workflow 7. `when` is
    the time of the job's latest step: when it finished, started running, or may run
    (`in 5m` for a delayed job or a retry).
    """
    from pgjobs import admin

    admin.check_states(state or ())
    with closing(open_app(database_url, schema)) as app:
        jobs = admin.list_jobs(
            app,
            states=state or (),
            queues=queue or (),
            tasks=task or (),
            limit=limit,
            workflow_id=workflow,
        )
    if as_json:
        print_json([job.as_dict() for job in jobs])
        return
    if not jobs:
        print_rich("no matching jobs")
        return
    drawn = console()
    table = _jobs_table(jobs, wide=wide or drawn.width >= WIDE_TERMINAL, steps=bool(workflow))
    if wide:
        # Nothing shortened: the lines may be wider than the terminal (`less -S` helps).
        unbounded = drawn.options.update_width(_UNBOUNDED)
        drawn.width = max(drawn.width, drawn.measure(table, options=unbounded).maximum)
    print_rich(table, on=drawn)


def _jobs_table(jobs: list[Job], *, wide: bool, steps: bool = False) -> Table:
    """One line per job (with its step name when `steps`). Only task, worker and last
    error give way to a narrow terminal, ending in an ellipsis; the short columns (id,
    state, attempts, when) keep their width."""
    from rich.text import Text

    now = datetime.now(timezone.utc)
    layout: list[tuple[Column, Callable[[Job], RenderableType], bool]] = [
        (_fixed("id", "right"), lambda job: str(job.id), True),
        (_fixed("queue"), lambda job: job.queue, wide),
        (_shrinking("step"), lambda job: _cut(job.step), steps),
        (_shrinking("task"), lambda job: _cut(job.task), True),
        (
            _fixed("state"),
            lambda job: Text(job.state.value, style=_STATE_STYLES.get(job.state, "")),
            True,
        ),
        (_fixed("priority", "right"), lambda job: str(job.priority), wide),
        (_fixed("attempts", "right"), lambda job: f"{job.attempts}/{job.max_attempts}", True),
        (_fixed("when"), lambda job: _when(job, now), True),
        (_fixed("created"), lambda job: format_time(job.created_at), wide),
        (_fixed("finished"), lambda job: format_time(job.finished_at), wide),
        (_shrinking("worker"), lambda job: _cut(job.worker_id), True),
        (_shrinking("last error"), lambda job: _cut(first_line(job.last_error, 200)), True),
    ]
    shown = [(column, cell) for column, cell, wanted in layout if wanted]
    table = make_table(*(column for column, _ in shown))
    for job in jobs:
        table.add_row(*(cell(job) for _, cell in shown))
    return table


def _fixed(header: str, justify: JustifyMethod = "left") -> Column:
    from rich.table import Column

    return Column(header, justify=justify, no_wrap=True)


def _shrinking(header: str) -> Column:
    """A column rich may narrow to fit the terminal; its cells come from `_cut`."""
    from rich.table import Column
    from rich.text import Text

    return Column(Text(header, no_wrap=True, overflow="ellipsis"))


def _cut(value: str | None) -> Text:
    """A cell that stays on one line, ending in an ellipsis when its column is narrowed."""
    from rich.text import Text

    return Text(value or "-", no_wrap=True, overflow="ellipsis")


def _when(job: Job, now: datetime) -> str:
    """How long ago the job finished, started, or became runnable; or how soon it may run."""
    if job.state is JobState.BLOCKED:
        return "-"  # until its dependencies complete
    if job.state.finished:
        moment = job.finished_at
    elif job.state is JobState.RUNNING:
        moment = job.started_at
    else:
        moment = job.run_at
    if moment is None:
        return "-"
    if moment > now:
        return f"in {format_age(moment - now)}"
    return f"{format_age(now - moment)} ago"


def show(
    job_id: Annotated[int, typer.Argument(metavar="ID", help="The job's id.")],
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job: every column, then its attempt history with tracebacks.

    The result is printed as JSON when the task stores one, and so is the job's metadata
    (`meta`) when it has any. A workflow step also shows
    its workflow id, step name, run_if and its dependencies (id, step and state); a
    step cancelled because of a dependency says which in its history.
    """
    from rich.text import Text

    from pgjobs import admin

    with closing(open_app(database_url, schema)) as app:
        job = admin.get_job(app, job_id)
        dependencies = admin.get_dependencies(app, job)
    if as_json:
        print_json(job.as_dict())
        return
    fields = _job_fields(job, dependencies)
    if not job.errors:
        print_rich(fields, "", "no failed attempts")
        return
    print_rich(
        fields,
        "",
        Text(f"attempt history ({len(job.errors)})", style="bold"),
        *_attempts(job.errors),
    )


def _job_fields(job: Job, dependencies: dict[int, tuple[str, str]]) -> Table:
    fields = table_class().grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for name, value in job.as_dict().items():
        if name in ("errors", "max_attempts") or (name in _WHEN_SET and value is None):
            continue
        if name == "attempts":
            shown = f"{value} of {job.max_attempts}"
        elif name in ("payload", "result", "meta"):
            shown = json.dumps(value, ensure_ascii=False)
        elif name == "depends_on":
            shown = ", ".join(_dependency(d, dependencies.get(d)) for d in value)
        elif isinstance(value, datetime):
            shown = format_time(value)
        else:
            shown = "-" if value is None else str(value)
        fields.add_row(name, shown)
    return fields


def _dependency(job_id: int, found: tuple[str, str] | None) -> str:
    """E.g. "12 fetch (completed)", or "12 (deleted)" once retention deleted it."""
    return f"{job_id} {found[0]} ({found[1]})" if found else f"{job_id} (deleted)"


def _entry_time(value: Any) -> str:
    """An error entry's `at`, stored as JSON text, shown like the other timestamps."""
    try:
        return format_time(datetime.fromisoformat(value))
    except (TypeError, ValueError):
        return str(value or "-")


def _attempts(errors: list[dict[str, Any]]) -> list[RenderableType]:
    """A table of the failed attempts, then each attempt's traceback, indented."""
    from rich.text import Text

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
            shown.append(Text(textwrap.indent(printable(traceback, keep_newlines=True), "  ")))
    return shown
