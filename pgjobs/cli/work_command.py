"""`pgjobs work --app MODULE:ATTR`: run a worker until SIGTERM or SIGINT."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from pgjobs.app import App
from pgjobs.cli.common import (
    DatabaseUrlOption,
    SchemaOption,
    fail,
    reports_errors,
    require_migrated,
)
from pgjobs.logs import configure_logging
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.queues import QueueSpec


def load_app(reference: str) -> App:
    """Import `module:attribute` (from the current directory too) and check it is an App."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise fail(f"--app must look like module:attribute, got {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise fail(f"--app: cannot import module {module_name!r}") from None
        raise
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise fail(f"--app: {reference} is not a pgjobs.App (found {type(app).__name__})")
    return app


@reports_errors
def work(
    app_reference: Annotated[
        str, typer.Option("--app", help="The App to serve, as module:attribute.")
    ],
    queues: Annotated[
        str | None,
        typer.Option(help="Queues to serve: a,b or a=6,b=3 (weights). Default: all queues."),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Threads, i.e. jobs run at once.")] = 10,
    shutdown_timeout: Annotated[
        float, typer.Option(help="Seconds running jobs get to finish on SIGTERM.")
    ] = 30.0,
    rescue_after: Annotated[
        float, typer.Option(help="Seconds without heartbeat before a job is rescued.")
    ] = 60.0,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between polls for delayed jobs.")
    ] = 1.0,
    log_format: Annotated[str, typer.Option(help="text or json.")] = "text",
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Run a worker: claim jobs, run them, retry failures; SIGTERM drains and exits."""
    if log_format not in ("text", "json"):
        raise fail(f"--log-format must be text or json, got {log_format!r}")
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise fail(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    settings = WorkerSettings(
        concurrency=concurrency,
        queues=QueueSpec.parse(queues),
        shutdown_timeout=shutdown_timeout,
        rescue_after=rescue_after,
        poll_interval=poll_interval,
    )
    app = load_app(app_reference)
    app.configure(database_url=database_url, schema=schema)
    require_migrated(app)
    configure_logging(log_format, log_level)
    raise typer.Exit(Worker(app, settings).run())
