"""`pgjobs retry ID…`, `pgjobs cancel ID…` and `pgjobs prune`: changing the queue."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from typing import Annotated

import typer

from pgjobs import admin
from pgjobs.app import App
from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, fail, open_app, reports_errors
from pgjobs.cli.output import format_age
from pgjobs.errors import ConfigurationError, JobStateError
from pgjobs.schema import FINISHED_STATES

IdsArgument = Annotated[list[int], typer.Argument(metavar="ID", help="Job ids.")]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in "3600", "45s", "30m", "12h", "7d" or "2w"."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(
            f"--older-than takes seconds or a duration like 7d, 12h or 30m, not {text!r}"
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


@reports_errors
def retry(
    ids: IdsArgument,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Re-queue failed or cancelled jobs to run now, with at least one attempt left.

    All or nothing: if any id is unknown or not failed/cancelled, no job is changed and
    the exit status is 1.
    """
    changed = _change(admin.retry_jobs, database_url, schema, ids, verb="retried")
    print(_summary("retried", changed))


@reports_errors
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
    changed = _change(admin.cancel_jobs, database_url, schema, ids, verb="cancelled")
    print(_summary("cancelled", changed))


@reports_errors
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
            help=f"Only jobs in this state ({', '.join(FINISHED_STATES)}). Repeatable. "
            "Default: all three.",
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Delete finished jobs older than the retention, in batches of 10,000 rows."""
    seconds = parse_duration(older_than)
    states = tuple(state) if state else FINISHED_STATES
    with closing(open_app(database_url, schema)) as app:
        deleted = admin.prune_jobs(app, seconds, states)
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
    """Run `change`; a refusal prints one line per refused job, then exits with 1."""
    with closing(open_app(database_url, schema)) as app:
        try:
            return change(app, ids)
        except JobStateError as error:
            lines = list(error.problems.values())
            if len(set(ids)) > len(lines):
                lines.append(f"no job was {verb}: the change is all or nothing")
            for line in lines[:-1]:
                fail(line)
            raise fail(lines[-1]) from None


def _summary(verb: str, ids: list[int]) -> str:
    if len(ids) == 1:
        return f"{verb} job {ids[0]}"
    return f"{verb} {len(ids)} jobs: {', '.join(map(str, ids))}"
