"""`pgjobs migrate`: create or upgrade the schema (Alembic, imported only here)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, open_app


def migrate(
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (no connection).")
    ] = False,
) -> None:
    """Create or upgrade the pgjobs schema (idempotent)."""
    from pgjobs import migrate as migrations
    from pgjobs.config import resolve_schema

    if sql:
        migrations.upgrade_sql(resolve_schema(schema), sys.stdout)
        return
    app = open_app(database_url, schema, migrated=False)
    migrations.upgrade(app.database.url, app.schema, progress=_moved)
    print(f"schema {app.schema!r} is at revision {migrations.head_revision()}", file=sys.stderr)


def _moved(count: int) -> None:
    """A large table's history moves in batches (migration 0012): say how far it is."""
    print(f"moved {count:,} finished jobs into the history", file=sys.stderr)
