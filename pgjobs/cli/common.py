"""What every command shares: the connection options and turning errors into one line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import psycopg
import typer

from pgjobs.app import App
from pgjobs.db import first_line
from pgjobs.errors import PgJobsError, SchemaNotMigratedError

F = TypeVar("F", bound=Callable[..., Any])

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=["PGJOBS_DATABASE_URL", "DATABASE_URL"],
        show_envvar=True,
        help="PostgreSQL URL. Default: the embedded local cluster.",
    ),
]
SchemaOption = Annotated[
    str | None,
    typer.Option("--schema", envvar="PGJOBS_SCHEMA", show_envvar=True, help="pgjobs schema."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def debug_enabled() -> bool:
    """`PGJOBS_DEBUG=1` shows full tracebacks instead of one-line errors."""
    return os.environ.get("PGJOBS_DEBUG", "") not in ("", "0")


def fail(message: str) -> typer.Exit:
    """Print `message` as the one line a user mistake deserves; raise the result."""
    print(f"pgjobs: error: {message}", file=sys.stderr)
    return typer.Exit(code=1)


def reports_errors(command: F) -> F:
    """Turn pgjobs and connection errors into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if debug_enabled():
            return command(*args, **kwargs)
        try:
            return command(*args, **kwargs)
        except PgJobsError as error:
            raise fail(str(error)) from None
        except psycopg.OperationalError as error:
            raise fail(f"database error: {first_line(error)}") from None

    return wrapper  # type: ignore[return-value]


def open_app(database_url: str | None, schema: str | None, *, migrated: bool = True) -> App:
    """An App for a command; checks that the schema exists when the command needs it."""
    app = App(database_url, schema=schema)
    if migrated:
        try:
            require_migrated(app)
        except BaseException:
            app.close()
            raise
    return app


def require_migrated(app: App) -> None:
    """Raise a clear error when `pgjobs migrate` has not been run for the schema."""
    with app.database.transaction() as conn:
        row = conn.execute(
            app.queries.schema_exists, {"jobs_table": app.queries.jobs_table_name}
        ).fetchone()
    if not row or not row[0]:
        raise SchemaNotMigratedError.for_schema(app.schema)
