"""Alembic environment for pgjobs: everything, including the version table, in one schema.

`pgjobs migrate` passes the schema and an open connection through `config.attributes`;
running `alembic` by hand from a checkout reads `-x schema=` and `-x url=` instead.
"""

from __future__ import annotations

import os

import psycopg
import sqlalchemy as sa
from alembic import context
from psycopg import sql

from pgjobs.config import DEFAULT_SCHEMA, normalize_url, validate_schema

config = context.config
cli_args = context.get_x_argument(as_dictionary=True)
schema = validate_schema(
    config.attributes.get("schema")
    or cli_args.get("schema")
    or os.environ.get("PGJOBS_SCHEMA")
    or DEFAULT_SCHEMA
)
config.attributes["schema"] = schema
quoted_schema = sql.Identifier(schema).as_string()


def run_migrations_offline() -> None:
    """Print the DDL (`pgjobs migrate --sql`) without connecting anywhere."""
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted_schema}")
        context.run_migrations()


def run_migrations_online(connection: sa.Connection) -> None:
    """Upgrade inside one transaction, serialised against concurrent `migrate` runs."""
    context.configure(connection=connection, version_table_schema=schema)
    with context.begin_transaction():
        connection.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pgjobs.migrate:{schema}",)
        )
        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted_schema}")
        context.run_migrations()


def _connect_from_arguments() -> None:
    url = (
        cli_args.get("url")
        or os.environ.get("PGJOBS_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise SystemExit("alembic: pass -x url=postgresql://... or set PGJOBS_DATABASE_URL")
    engine = sa.create_engine(
        "postgresql+psycopg://",
        # Not prepared: it may go through a transaction pooler (pgjobs.pooler).
        creator=lambda: psycopg.connect(normalize_url(url), prepare_threshold=None),
        poolclass=sa.pool.NullPool,
    )
    with engine.connect() as connection:
        run_migrations_online(connection)
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
elif "connection" in config.attributes:
    run_migrations_online(config.attributes["connection"])
else:
    _connect_from_arguments()
