"""`pgjobs retry ID…`, `pgjobs cancel ID…` and `pgjobs prune`: changing the queue."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, open_app, parse_duration
from pgjobs.cli.output import format_age
from pgjobs.job import FINISHED_STATES

if TYPE_CHECKING:
    from pgjobs.app import App

IdsArgument = Annotated[list[int], typer.Argument(metavar="ID", help="Job ids.")]


def retry(
    ids: IdsArgument,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Re-queue failed or cancelled jobs to run now, with at least one attempt left.

    All or nothing: if any id is unknown or not failed/cancelled, no job is changed and
    the exit status is 1.
    """
    from pgjobs.admin import retry_jobs

    changed = _change(retry_jobs, database_url, schema, ids, verb="retried")
    print(_summary("retried", changed))


def cancel(
    ids: IdsArgument,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Cancel waiting or running jobs.

    A running job's worker notices at its next heartbeat and discards the job's result.
    All or nothing: if any id is unknown or already finished, no job is changed and the
    exit status is 1.
    """
    from pgjobs.admin import cancel_jobs

    changed = _change(cancel_jobs, database_url, schema, ids, verb="cancelled")
    print(_summary("cancelled", changed))


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
