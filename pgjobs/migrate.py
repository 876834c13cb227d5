"""Schema management through Alembic, with the migrations shipped inside the package."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any, TextIO

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from pgjobs import history
from pgjobs.data.history import HistoryStatements
from pgjobs.data.sql import SchemaSQL
from pgjobs.db import connect


def alembic_config(schema: str, **attributes: Any) -> Config:
    """An Alembic config pointing at the packaged migrations, for one schema."""
    config = Config(output_buffer=attributes.pop("output_buffer", None))
    config.set_main_option("script_location", str(files("pgjobs.migrations")))
    config.attributes["schema"] = schema
    config.attributes.update(attributes)
    return config


def _engine(url: str) -> sa.Engine:
    # psycopg parses the URL itself (Unix-socket URLs included); SQLAlchemy only wraps it.
    return sa.create_engine(
        "postgresql+psycopg://", creator=lambda: connect(url), poolclass=sa.pool.NullPool
    )


def upgrade(
    url: str,
    schema: str,
    revision: str = "head",
    progress: Callable[[int], None] = lambda moved: None,
) -> None:
    """Create or upgrade `schema` to the newest revision (or to `revision`, as a test of
    an older schema does); safe to run repeatedly. At the newest revision, the history's
    partitions are made and finished rows left in jobs_live moved into it (`progress`
    hears how many so far)."""
    with _engine(url).connect() as connection:
        command.upgrade(alembic_config(schema, connection=connection), revision)
        connection.commit()
    if revision == "head":
        prepare_history(url, schema, progress)


def prepare_history(
    url: str, schema: str, progress: Callable[[int], None] = lambda moved: None
) -> int:
    """Make the history's partitions for the days ahead and move the finished rows left
    in jobs_live into it (a table's history from before migration 0012), in batches of
    their own short transactions; how many rows moved."""
    statements = HistoryStatements(SchemaSQL(schema))
    with connect(url, autocommit=True) as conn:
        history.prepare(conn, statements, completed_only=True)
        return history.move_finished(conn, statements, progress=progress)


def upgrade_sql(schema: str, output: TextIO) -> None:
    """Write the DDL of a full upgrade to `output` without connecting anywhere."""
    command.upgrade(alembic_config(schema, output_buffer=output), "head", sql=True)


def head_revision() -> str | None:
    """The newest revision shipped with this version of pgjobs."""
    return ScriptDirectory.from_config(alembic_config("pgjobs")).get_current_head()
