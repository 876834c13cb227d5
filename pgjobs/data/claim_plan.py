"""The claim's plan as the worker runs it, for EXPLAIN.

The worker claims through the function `claim_jobs` (migration 0013), which plans its
statement once per session under planner settings of its own; EXPLAIN of a call shows
only a function scan. This module reads the function's statement and settings from the
catalog and explains that statement the way the function runs it: the generic plan of a
prepared statement, under the function's settings, in a transaction rolled back (a
claim explained with ANALYZE claims nothing for good). The tests and the benches read
the claim's plan so.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from pgjobs.data.connector import rows
from pgjobs.data.steps import Rows, Statement

# The function's arguments, in order: the statement's parameters $1 to $5.
ARGUMENTS = ("claim_limit", "claim_begin", "claim_worker", "claim_queue", "claim_async")
ARGUMENT_TYPES = "integer, integer, text, text, boolean"
PREPARED_NAME = "pgjobs_claim_plan"

SET_CONFIG = sql.SQL("SELECT set_config(%s, %s, true)")
FUNCTION = sql.SQL("""
SELECT p.prosrc, coalesce(p.proconfig, '{}')
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND p.proname = 'claim_jobs'
""")


def explain_claim(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    limit: int,
    begin: int = 0,
    queue: str | None = None,
    options: str = "ANALYZE, COSTS OFF",
    as_function: bool = True,
) -> Rows:
    """EXPLAIN (`options`) of a claim of up to `limit` jobs from `queue` (every queue
    when None), planned as `claim_jobs` plans it; the rows EXPLAIN returns.
    `as_function=False`: planned as the same statement outside the function would be
    (for its values, under the session's settings), to compare.

    Leaves `conn` as it found it: in a caller's transaction everything runs in a
    savepoint rolled back, outside one in a transaction rolled back."""
    name = sql.Identifier(PREPARED_NAME)
    # The arguments as literals: a utility statement leaves its parameters' types unknown.
    arguments = [sql.Literal(value) for value in (limit, begin, "explain", queue, False)]
    explain = sql.SQL("EXPLAIN ({}) EXECUTE {} ({})").format(
        sql.SQL(options), name, sql.SQL(", ").join(arguments)
    )
    with conn.transaction(force_rollback=True):
        source, settings = _function(conn, schema)
        if not as_function:
            settings = ["plan_cache_mode=force_custom_plan"]
        for setting in settings:
            _rows(conn, schema, SET_CONFIG, setting.split("=", 1))
        prepare = sql.SQL("PREPARE {} ({}) AS {}").format(
            name, sql.SQL(ARGUMENT_TYPES), sql.SQL(_statement(source, queue is None))
        )
        _rows(conn, schema, prepare)
        # A prepared statement outlives a rollback: deallocated before it, after the
        # EXPLAIN, whose own savepoint keeps this transaction usable should it fail.
        try:
            with conn.transaction(force_rollback=True):
                return _rows(conn, schema, explain)
        finally:
            _rows(conn, schema, sql.SQL("DEALLOCATE {}").format(name))


def _statement(source: str, any_queue: bool) -> str:
    """Of the function's `source`, the claim from every queue or from one, its arguments
    written as $1 to $5."""
    every, one = re.findall(r"RETURN QUERY\s+(.*?);", source, re.DOTALL)
    statement: str = every if any_queue else one
    for number, argument in enumerate(ARGUMENTS, start=1):
        statement = re.sub(rf"\b{argument}\b", f"${number}", statement)
    return statement


def _function(conn: psycopg.Connection[Any], schema: str) -> tuple[str, list[str]]:
    """The source of `claim_jobs` in `schema` and its settings (`name=value`)."""
    found = _rows(conn, schema, FUNCTION, [schema])
    if not found:
        raise LookupError(f"schema {schema!r} has no claim_jobs function: run pgjobs migrate")
    [(source, settings)] = found
    return source, list(settings)


def _rows(
    conn: psycopg.Connection[Any], schema: str, query: sql.Composable, params: Any = None
) -> Rows:
    """Run `query` (with its literals rendered for `conn`) through the connector."""
    return rows(conn, schema, Statement(sql.SQL(query.as_string(conn)), params))
