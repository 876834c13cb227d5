"""The plans of the statements the worker runs inside functions, for EXPLAIN.

The worker claims through the function `claim_jobs` (migration 0013) and completes
through `complete_jobs` (0014): each plans its statement once per session, under planner
settings of its own, and EXPLAIN of a call shows only a function scan. This module reads
a function's statement and settings from the catalog and explains that statement the
way the function runs it: the generic plan of a prepared statement, under the function's
settings, in a transaction rolled back (a claim explained with ANALYZE claims nothing for
good). The tests and the benches read the claim's and the completion's plans so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgjobs.data.connector import rows
from pgjobs.data.outcome_sql import attempts_by_id, results_by_id
from pgjobs.data.sql import int_array
from pgjobs.data.steps import Rows, Statement
from pgjobs.types import Outcome


@dataclass(frozen=True)
class FunctionStatement:
    """A function that runs its statements with `RETURN QUERY`, and its arguments (the
    statements' parameters $1, $2, ... in this order) with their types."""

    function: str
    arguments: tuple[str, ...]
    types: tuple[str, ...]


CLAIM = FunctionStatement(
    "claim_jobs",
    ("claim_limit", "claim_begin", "claim_worker", "claim_queue", "claim_async"),
    ("integer", "integer", "text", "text", "boolean"),
)
COMPLETION = FunctionStatement(
    "complete_jobs",
    ("done_ids", "done_attempts", "done_worker", "done_results"),
    ("bigint[]", "jsonb", "text", "jsonb"),
)
PREPARED_NAME = "pgjobs_function_plan"

SET_CONFIG = sql.SQL("SELECT set_config(%s, %s, true)")
FUNCTION = sql.SQL("""
SELECT p.prosrc, coalesce(p.proconfig, '{}')
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND p.proname = %s
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
    arguments = (limit, begin, "explain", queue, False)
    which = 0 if queue is None else 1  # the claim from every queue comes first
    return explain_function(conn, schema, CLAIM, arguments, which, options, as_function)


def explain_completion(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    outcomes: Sequence[Outcome],
    worker_id: str,
    options: str = "ANALYZE, COSTS OFF",
    as_function: bool = True,
) -> Rows:
    """EXPLAIN (`options`) of the completion of `outcomes` (successes) by `worker_id`,
    planned as `complete_jobs` plans it, with their results when they are watched ones
    (as the worker sends them); as `explain_claim` does otherwise."""
    watched = any(outcome.watched for outcome in outcomes)
    arguments = (
        int_array([outcome.job_id for outcome in outcomes]),
        attempts_by_id(outcomes),
        worker_id,
        results_by_id(outcomes) if watched else None,
    )
    return explain_function(conn, schema, COMPLETION, arguments, 0, options, as_function)


def explain_function(
    conn: psycopg.Connection[Any],
    schema: str,
    statement: FunctionStatement,
    arguments: Sequence[Any],
    which: int,
    options: str,
    as_function: bool,
) -> Rows:
    """EXPLAIN (`options`) of the `which`th statement of `statement`'s function in
    `schema`, for `arguments`, planned as the function plans it (or, `as_function=False`,
    as that statement outside it would be)."""
    name = sql.Identifier(PREPARED_NAME)
    # The arguments as literals: a utility statement leaves its parameters' types unknown.
    literals = [sql.Literal(value) for value in arguments]
    explain = sql.SQL("EXPLAIN ({}) EXECUTE {} ({})").format(
        sql.SQL(options), name, sql.SQL(", ").join(literals)
    )
    with conn.transaction(force_rollback=True):
        source, settings = _function(conn, schema, statement.function)
        if not as_function:
            settings = ["plan_cache_mode=force_custom_plan"]
        for setting in settings:
            _rows(conn, schema, SET_CONFIG, setting.split("=", 1))
        prepare = sql.SQL("PREPARE {} ({}) AS {}").format(
            name,
            sql.SQL(", ".join(statement.types)),
            sql.SQL(_statement(source, statement.arguments, which)),
        )
        _rows(conn, schema, prepare)
        # A prepared statement outlives a rollback: deallocated before it, after the
        # EXPLAIN, whose own savepoint keeps this transaction usable should it fail.
        try:
            with conn.transaction(force_rollback=True):
                return _rows(conn, schema, explain)
        finally:
            _rows(conn, schema, sql.SQL("DEALLOCATE {}").format(name))


def _statement(source: str, arguments: Sequence[str], which: int) -> str:
    """The `which`th `RETURN QUERY` statement of a function's `source`, its `arguments`
    written as $1, $2, ..."""
    statement: str = re.findall(r"RETURN QUERY\s+(.*?);", source, re.DOTALL)[which]
    for number, argument in enumerate(arguments, start=1):
        statement = re.sub(rf"\b{argument}\b", f"${number}", statement)
    return statement


def _function(conn: psycopg.Connection[Any], schema: str, function: str) -> tuple[str, list[str]]:
    """The source of `function` in `schema` and its settings (`name=value`)."""
    found = _rows(conn, schema, FUNCTION, [schema, function])
    if not found:
        raise LookupError(f"schema {schema!r} has no {function} function: run pgjobs migrate")
    [(source, settings)] = found
    return source, list(settings)


def _rows(
    conn: psycopg.Connection[Any], schema: str, query: sql.Composable, params: Any = None
) -> Rows:
    """Run `query` (with its literals rendered for `conn`) through the connector."""
    return rows(conn, schema, Statement(sql.SQL(query.as_string(conn)), params))
