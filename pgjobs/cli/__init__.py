"""The `pgjobs` command line: one module per command group, assembled here.

- `work`     run a worker
- `enqueue`  one job by task name
- `inspect`  stats, list, show
- `workflow` one workflow's steps
- `manage`   retry, cancel, prune
- `queues`   queues, and queue pause|resume|limit
- `limits`   task and queue limits, and their use
- `workers`  the worker fleet
- `schedules` periodic tasks, their last and next runs
- `migrate`  create or upgrade the schema
- `doctor`   what hurts the queue, checked; --fix applies the safe fixes
- `web`      the dashboard (pgjobs.web)
- `demo`     the tour of `pgjobs.demo`
- `embedded` the local PostgreSQL, and `url`
- `common`   options and helpers the commands share; `output` how they print

Each module imports what is heavy (Alembic, rich, the worker) inside its commands, so
starting `pgjobs` costs only what the command run needs. Errors a user can cause are
turned into one line here, in `main()`, for every command alike.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, NoReturn

import typer

from pgjobs.cli import demo, enqueue, inspect, manage, migrate, web, work, workflow
from pgjobs.cli.common import Command, debug_enabled
from pgjobs.cli.doctor import doctor
from pgjobs.cli.embedded import embedded_cli, url
from pgjobs.cli.limits import limits
from pgjobs.cli.queues import queue_cli, queues
from pgjobs.cli.schedules import schedules
from pgjobs.cli.workers import workers
from pgjobs.errors import PgJobsError

cli = typer.Typer(
    name="pgjobs",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from pgjobs import __version__

        print(f"pgjobs {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """A durable background-job queue on PostgreSQL."""


cli.command(cls=Command)(migrate.migrate)
cli.command(cls=Command)(doctor)
cli.command(cls=Command)(enqueue.enqueue)
cli.command(cls=Command)(inspect.stats)
cli.command("list", cls=Command)(inspect.list_jobs)
cli.command(cls=Command)(inspect.show)
cli.command(cls=Command)(workflow.workflow)
cli.command(cls=Command)(queues)
cli.command(cls=Command)(limits)
cli.command(cls=Command)(manage.retry)
cli.command(cls=Command)(manage.cancel)
cli.command(cls=Command)(manage.prune)
cli.command(cls=Command)(work.work)
cli.command(cls=Command)(workers)
cli.command(cls=Command)(schedules)
cli.command(cls=Command)(web.web)
cli.command(cls=Command)(demo.demo)
cli.command(cls=Command)(url)
cli.add_typer(embedded_cli)
cli.add_typer(queue_cli)


def main(argv: list[str] | None = None) -> NoReturn:
    """Run `pgjobs ARGV` and exit.

    Every error a user can cause (a `PgJobsError`, a database error, a usage mistake)
    becomes `pgjobs: error: …` on stderr and exit status 1 (2 for usage), never a
    traceback; `PGJOBS_DEBUG=1` lets pgjobs and database errors through with theirs.
    """
    try:
        result = cli(args=argv, prog_name="pgjobs", standalone_mode=False)
    except typer.Abort:
        print("pgjobs: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if _is_usage_error(error):
            sys.exit(_report_usage(error))
        lines = _error_lines(error)
        if lines is None or debug_enabled():
            raise
        for line in lines:
            print(f"pgjobs: error: {line}", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def _is_usage_error(error: Exception) -> bool:
    """Click's usage errors (bad option, missing argument). Typer vendors Click in recent
    releases, so they are recognised by shape rather than by class."""
    return hasattr(error, "format_message") and hasattr(error, "exit_code")


def _report_usage(error: Any) -> int:
    """Print a usage error in one line and return the exit status.

    A group run without a command (bare `pgjobs`) is no mistake: it prints its help.
    """
    ctx = getattr(error, "ctx", None)
    if type(error).__name__ == "NoArgsIsHelpError" and ctx is not None:
        print(ctx.get_help())
        return 0
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    print(f"pgjobs: error: {error.format_message()}{hint}", file=sys.stderr)
    return int(error.exit_code)


def _error_lines(error: Exception) -> list[str] | None:
    """The lines that report `error` to a user, or None for a bug (kept as a traceback).

    Most messages are one line; refusing to retry or cancel several jobs names each.
    """
    if isinstance(error, PgJobsError):
        return str(error).splitlines() or [type(error).__name__]
    import psycopg

    from pgjobs.db import first_line

    if isinstance(error, psycopg.Error):
        return [f"database error: {first_line(error)}"]
    return None
