"""Whether a schema is at the migration this pgjobs needs, before a command relies on it.

A schema one migration behind fails late and obscurely: a worker logs "worker started",
then its fetcher fails on a missing table forever; `pgjobs list` names a missing column.
So `pgjobs work` and the inspection and admin commands compare the schema's Alembic
revision (`<schema>.alembic_version`) with the newest one this package ships, and say in
one line to run `pgjobs migrate`.

A schema at a revision this package does not know was migrated by a newer pgjobs; it is
accepted, as during a rolling deploy (migrations add, old code keeps working). A role
that may not read `alembic_version` (the least-privilege grants do not include it) is
not checked beyond the jobs table's existence.

The package's revisions are read from the migration files' text, not through Alembic,
whose import would cost every command a third of a second.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from pgjobs.errors import SchemaBehindError, SchemaNotMigratedError

if TYPE_CHECKING:
    import psycopg

    from pgjobs.app import App
    from pgjobs.data.inspect import InspectStatements

_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(
    r"^down_revision\s*(?::[^=]*)?=\s*(?:None|['\"]([^'\"]+)['\"])", re.MULTILINE
)


@cache
def package_revisions() -> tuple[str, ...]:
    """The revisions of the migrations shipped with this pgjobs, oldest first."""
    parents: dict[str, str | None] = {}
    for path in files("pgjobs.migrations.versions").iterdir():
        if not path.name.endswith(".py") or path.name.startswith("__"):
            continue
        text = path.read_text(encoding="utf-8")
        found, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if found is None or down is None:
            raise RuntimeError(f"migration {path.name} names no revision and down_revision")
        parents[found[1]] = down[1]
    heads = set(parents) - set(parents.values())
    if len(heads) != 1:
        raise RuntimeError(f"the packaged migrations have {len(heads)} heads: {sorted(heads)}")
    chain: list[str] = []
    revision: str | None = heads.pop()
    while revision is not None:
        chain.append(revision)
        revision = parents[revision]
    return tuple(reversed(chain))


def check_schema_revision(conn: psycopg.Connection[Any], inspect: InspectStatements) -> None:
    """Raise `SchemaNotMigratedError` when the schema has no jobs table, or
    `SchemaBehindError` when it lacks a migration this pgjobs ships.

    Runs in `conn`'s transaction and sends no statement that can fail on a missing or
    unreadable table, so that transaction stays usable.
    """
    migrated, revision = inspect.schema_revision(conn)
    if not migrated:
        raise SchemaNotMigratedError.for_schema(inspect.schema)
    known = package_revisions()
    if revision is not None and revision in known[:-1]:
        raise SchemaBehindError(inspect.schema, revision, known[-1])


def require_current_schema(app: App) -> None:
    """`check_schema_revision` for `app`'s schema, on a connection of its own pool."""
    with app.database.transaction() as conn:
        check_schema_revision(conn, app.data.inspect)
