"""`pgjobs enqueue TASK --payload JSON`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, fail, open_app, reports_errors


@reports_errors
def enqueue(
    task: Annotated[str, typer.Argument(help="Registered task name.")],
    payload: Annotated[str, typer.Option("--payload", help="Arguments as a JSON object.")] = "{}",
    queue: Annotated[str | None, typer.Option(help="Queue name.")] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before it may run.")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts allowed.")] = None,
    unique_key: Annotated[str | None, typer.Option(help="At most one unfinished job.")] = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Enqueue one job by task name and print its id."""
    try:
        arguments = json.loads(payload)
    except json.JSONDecodeError as error:
        raise fail(f"--payload is not valid JSON: {error}") from None
    if not isinstance(arguments, dict):
        raise fail("--payload must be a JSON object of argument names to values")
    # Options are validated before anything connects; a missing schema is reported by
    # the insert itself.
    app = open_app(database_url, schema, migrated=False)
    job_id = app.enqueue(
        None,
        task,
        arguments,
        queue=queue,
        delay=delay,
        priority=priority,
        max_attempts=max_attempts,
        unique_key=unique_key,
    )
    print(job_id)
