"""`pgjobs retry`, `pgjobs cancel` (by id, by filter, or a whole workflow) and `pgjobs
prune`: changing jobs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, open_app, parse_duration
from pgjobs.cli.output import format_age
from pgjobs.errors import ConfigurationError
from pgjobs.types import FINISHED_STATES

if TYPE_CHECKING:
    from pgjobs.admin import BulkAction, JobFilter
    from pgjobs.app import App

IdsArgument = Annotated[list[int] | None, typer.Argument(metavar="ID", help="Job ids.")]
TaskFilter = Annotated[
    list[str] | None,
    typer.Option("--task", metavar="TASK", help="Jobs of this task. Repeatable."),
]
QueueFilter = Annotated[
    list[str] | None,
    typer.Option("--queue", metavar="QUEUE", help="Jobs of this queue. Repeatable."),
]
StateFilter = Annotated[
    list[str] | None,
    typer.Option("--state", metavar="STATE", help="Jobs in this state. Repeatable."),
]
OlderThanFilter = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        metavar="DURATION",
        help="Jobs enqueued longer ago than this: seconds, or 30m, 12h, 7d, 2w.",
    ),
]
WorkflowOption = Annotated[
    int | None,
    typer.Option(
        "--workflow",
        metavar="ID",
        help="Cancel every unfinished step (available, blocked or running) of this workflow.",
    ),
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation on a terminal.")
]


def retry(
    ids: IdsArgument = None,
    task: TaskFilter = None,
    queue: QueueFilter = None,
    state: StateFilter = None,
    older_than: OlderThanFilter = None,
    yes: YesOption = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Re-queue failed or cancelled jobs to run now, with at least one attempt left.

    By id: all or nothing; if any id is unknown or not failed/cancelled, no job is
    changed and the exit status is 1. By filter (--task, --queue, --state failed or
    cancelled, --older-than; they combine): every matching job, in batches, after
    confirmation on a terminal; a job whose unique_key an unfinished job holds is left.

    A workflow step goes back blocked until its unfinished dependencies complete; one
    whose dependency failed or was cancelled is refused until that dependency is
    retried too (unless it was added with run_if="finished"). Its cancelled dependents
    stay cancelled: retry them as well (`pgjobs retry A B C` retries a chain at once).
    """
    from pgjobs.admin import retry_jobs

    job_filter = _filter(ids, task, queue, state, older_than, action="retry")
    if job_filter is not None:
        _change_matching("retry", job_filter, yes, database_url, schema)
        return
    changed = _change(retry_jobs, database_url, schema, ids or [], verb="retried")
    print(_summary("retried", changed))


def cancel(
    ids: IdsArgument = None,
    task: TaskFilter = None,
    queue: QueueFilter = None,
    state: StateFilter = None,
    older_than: OlderThanFilter = None,
    workflow: WorkflowOption = None,
    yes: YesOption = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Cancel waiting, blocked or running jobs.

    A running job's worker is told at once: the task's stop flag is set and its result
    discarded. By id: all or nothing; if any id is unknown or already finished, no job is
    changed and the exit status is 1. By filter (--task, --queue, --state available,
    blocked or running, --older-than; they combine): every matching job, in batches,
    after confirmation on a terminal. --workflow ID: every unfinished step of that
    workflow, at once.

    Cancelling a workflow step cancels the steps that depend on it, and theirs, down the
    graph; a step added with run_if="finished" runs instead.
    """
    from pgjobs.admin import cancel_jobs

    if workflow is not None:
        if ids or task or queue or state or older_than is not None:
            raise ConfigurationError("give --workflow alone, without job ids or filters")
        _cancel_workflow(workflow, database_url, schema)
        return
    job_filter = _filter(ids, task, queue, state, older_than, action="cancel")
    if job_filter is not None:
        _change_matching("cancel", job_filter, yes, database_url, schema)
        return
    changed = _change(cancel_jobs, database_url, schema, ids or [], verb="cancelled")
    print(_summary("cancelled", changed))


def _cancel_workflow(workflow_id: int, database_url: str | None, schema: str | None) -> None:
    from pgjobs.admin import cancel_workflow

    with closing(open_app(database_url, schema)) as app:
        cancelled = cancel_workflow(app, workflow_id)
    if not cancelled:
        print(f"workflow {workflow_id} has no unfinished step: nothing cancelled")
        return
    steps = f"{len(cancelled)} {'step' if len(cancelled) == 1 else 'steps'}"
    print(f"cancelled {steps} of workflow {workflow_id}: {', '.join(map(str, cancelled))}")


def _filter(
    ids: list[int] | None,
    tasks: list[str] | None,
    queues: list[str] | None,
    states: list[str] | None,
    older_than: str | None,
    *,
    action: str,
) -> JobFilter | None:
    """The filter given, or None for a change by id; refuses both or neither."""
    from pgjobs.admin import JobFilter

    filtered = bool(tasks or queues or states or older_than is not None)
    if ids and filtered:
        raise ConfigurationError(f"give job ids or filters to {action}, not both")
    if not ids and not filtered:
        raise ConfigurationError(
            f"give the ids of the jobs to {action}, or filters "
            "(--task, --queue, --state, --older-than) that select them"
            + (", or --workflow ID" if action == "cancel" else "")
        )
    if not filtered:
        return None
    return JobFilter(
        states=states or (),
        queues=queues or (),
        tasks=tasks or (),
        older_than_seconds=None if older_than is None else parse_duration(older_than),
    )


def _change_matching(
    action: BulkAction,
    job_filter: JobFilter,
    yes: bool,
    database_url: str | None,
    schema: str | None,
) -> None:
    """Count the matching jobs, confirm on a terminal, change them in batches, report."""
    from pgjobs.admin import change_selected, select_jobs

    verb = "retried" if action == "retry" else "cancelled"
    with closing(open_app(database_url, schema)) as app:
        selection = select_jobs(app, action, job_filter)
        described = _describe(selection.count, selection.states, job_filter)
        if selection.count == 0:
            print(f"{described}: nothing {verb}")
            return
        if not yes and sys.stdin.isatty():
            typer.confirm(f"{action} {described}?", abort=True)
        result = change_selected(app, selection)
    line = f"{verb} {_jobs(result.changed)}"
    if result.skipped:
        reason = (
            "their unique_key is held by an unfinished job, a step's dependency stays "
            "failed or cancelled, or they changed meanwhile"
            if action == "retry"
            else "they changed meanwhile"
        )
        line += f"; {_jobs(result.skipped)} left as they were ({reason})"
    print(line)


def _describe(count: int, states: list[str], job_filter: JobFilter) -> str:
    """E.g. "3 failed or cancelled jobs of task 'a' in queue 'mail'"."""
    from pgjobs.job_checks import describe_states

    kinds = describe_states(states)
    text = _jobs(count, kinds) if count else f"no {kinds} jobs"
    if job_filter.tasks:
        text += f" of task {' or '.join(map(repr, job_filter.tasks))}"
    if job_filter.queues:
        text += f" in queue {' or '.join(map(repr, job_filter.queues))}"
    if job_filter.older_than_seconds is not None:
        age = timedelta(seconds=job_filter.older_than_seconds)
        text += f" enqueued more than {format_age(age)} ago"
    return text


def _jobs(count: int, kind: str = "") -> str:
    kind = f"{kind} " if kind else ""
    return f"{count} {kind}{'job' if count == 1 else 'jobs'}"


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Delete jobs finished longer ago than this: seconds, or 30m, 12h, 7d, 2w.",
        ),
    ] = "7d",
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help=f"Only jobs in this state ({', '.join(s.value for s in FINISHED_STATES)}). "
            "Repeatable. Default: all three.",
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Delete finished jobs older than the retention, in batches of 10,000 rows."""
    from pgjobs.admin import prune_jobs

    seconds = parse_duration(older_than)
    states = state or [s.value for s in FINISHED_STATES]
    with closing(open_app(database_url, schema)) as app:
        deleted = prune_jobs(app, seconds, states)
    print(
        f"deleted {deleted} {'job' if deleted == 1 else 'jobs'} ({', '.join(states)}) "
        f"finished more than {format_age(timedelta(seconds=seconds))} ago"
    )


def _change(
    change: Callable[[App, list[int]], list[int]],
    database_url: str | None,
    schema: str | None,
    ids: list[int],
    *,
    verb: str,
) -> list[int]:
    """Run `change`; a refusal names every refused job, and that nothing changed."""
    from pgjobs.errors import JobStateError, PgJobsError

    with closing(open_app(database_url, schema)) as app:
        try:
            return change(app, ids)
        except JobStateError as error:
            if len(set(ids)) == len(error.problems):
                raise
            lines = [*error.problems.values(), f"no job was {verb}: the change is all or nothing"]
            raise PgJobsError("\n".join(lines)) from error


def _summary(verb: str, ids: list[int]) -> str:
    if len(ids) == 1:
        return f"{verb} job {ids[0]}"
    return f"{verb} {len(ids)} jobs: {', '.join(map(str, ids))}"
