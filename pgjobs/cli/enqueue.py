"""`pgjobs enqueue TASK --payload JSON`: one job by task name, from a shell."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, app_option, load_app, open_app
from pgjobs.errors import ConfigurationError


def enqueue(
    task: Annotated[str, typer.Argument(metavar="TASK", help="The task's registered name.")],
    payload: Annotated[
        str, typer.Option("--payload", metavar="JSON", help="Arguments as a JSON object.")
    ] = "{}",
    app_reference: Annotated[
        str | None,
        app_option(
            "Your pgjobs.App, as module:attribute; its task of this name gives the "
            "defaults (queue, priority, max attempts)."
        ),
    ] = None,
    queue: Annotated[str | None, typer.Option(metavar="NAME", help="Queue name.")] = None,
    delay: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Seconds before it may run.")
    ] = None,
    priority: Annotated[int | None, typer.Option(metavar="N", help="Higher runs first.")] = None,
    max_attempts: Annotated[int | None, typer.Option(metavar="N", help="Attempts allowed.")] = None,
    unique_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="At most one unfinished job holds a key.")
    ] = None,
    meta: Annotated[
        str | None,
        typer.Option(metavar="JSON", help="Metadata as a JSON object, stored in jobs.meta."),
    ] = None,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Enqueue one job by task name and print its id.

    Options not given come from the task's declaration when --app names the App that
    registers it; otherwise from the app-wide defaults: queue "default", priority 0,
    20 attempts.
    """
    arguments = _json_object("--payload", payload, "of argument names to values")
    metadata = None if meta is None else _json_object("--meta", meta, "of names to values")
    if app_reference is None:
        app = open_app(database_url, schema, migrated=False)
    else:
        app = load_app(app_reference)
        app.configure(database_url=database_url, schema=schema)
    # Options are validated before anything connects; a missing schema is reported by
    # the insert itself.
    try:
        job_id = app.enqueue(
            None,
            task,
            arguments,
            queue=queue,
            delay=delay,
            priority=priority,
            max_attempts=max_attempts,
            unique_key=unique_key,
            meta=metadata,
        )
    finally:
        app.close()
    print(job_id)


def _json_object(option: str, text: str, of_what: str) -> dict[str, Any]:
    """The JSON object an option gives, or a `ConfigurationError` naming the option."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ConfigurationError(f"{option} is nested too deeply to read as JSON") from None
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{option} is not valid JSON: {error}") from None
    except ValueError:  # Python reads no integer longer than this, to bound its time
        raise ConfigurationError(
            f"{option} holds an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{option} must be a JSON object {of_what}")
    return value
