"""The `pgjobs` command line: one module per command group, assembled here."""

from __future__ import annotations

import sys

import typer

from pgjobs.cli.demo_command import demo
from pgjobs.cli.enqueue_command import enqueue
from pgjobs.cli.inspect_commands import list_jobs, show, stats
from pgjobs.cli.manage_commands import cancel, prune, retry
from pgjobs.cli.schema_commands import migrate
from pgjobs.cli.work_command import work

cli = typer.Typer(
    name="pgjobs",
    help="A durable background-job queue on PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
cli.command()(migrate)
cli.command()(enqueue)
cli.command()(stats)
cli.command("list")(list_jobs)
cli.command()(show)
cli.command()(retry)
cli.command()(cancel)
cli.command()(prune)
cli.command()(work)
cli.command()(demo)


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors become one line on stderr, like every other error."""
    try:
        result = cli(args=argv, prog_name="pgjobs", standalone_mode=False)
    except typer.Abort:
        print("pgjobs: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        # Click's usage errors (bad option, missing argument). Typer vendors Click in
        # recent releases, so they are recognised by shape rather than by class.
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        ctx = getattr(error, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"pgjobs: error: {error.format_message()}{hint}", file=sys.stderr)
        sys.exit(error.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
