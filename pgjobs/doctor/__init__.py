"""`pgjobs doctor`: what hurts a Postgres queue from outside its own code, checked.

Each check is a small function of a `Context` that returns a `Finding`: ok, warn or
fail, a one-line message and a one-line fix. A check that cannot run (a role without
the right, a statement timeout) becomes a warning that says why; it never stops the
others. `--fix` applies only the `Repair`s findings carry: autovacuum settings of
pgjobs' tables and `REINDEX INDEX CONCURRENTLY` of an invalid index.

- `findings`: Finding, Repair, Thresholds, Context
- `server`: the server version, pending migrations, connections and the workers' budget
- `sessions`: what holds the xmin horizon back, sessions idle in a transaction
- `tables`: dead rows and (auto)vacuum, autovacuum settings, bloat, invalid indexes
- `queue`: queue lag, running jobs without a heartbeat, notifications

`diagnose(app)` runs them on a connection of its own (the CLI); `run_checks(app, conn)`
on the caller's (the dashboard's health page); `repair(app, findings)` applies the fixes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgjobs.data.doctor import DoctorStatements
from pgjobs.data.doctor_tables import TableStatements
from pgjobs.db import connect, first_line
from pgjobs.doctor import queue, server, sessions, tables
from pgjobs.doctor.findings import (
    LOCK_TIMEOUT,
    Context,
    Finding,
    Repair,
    RepairFailed,
    Thresholds,
    reason,
)
from pgjobs.errors import PgJobsError, migrate_command

if TYPE_CHECKING:
    from pgjobs.app import App

__all__ = [
    "CHECKS",
    "Finding",
    "Repair",
    "Repaired",
    "Thresholds",
    "diagnose",
    "repair",
    "run_checks",
]

CheckFunction = Callable[[Context], Finding]
# In the order the report lists them.
CHECKS: tuple[tuple[str, CheckFunction], ...] = (
    ("server version", server.server_version),
    ("migrations", server.migrations),
    ("vacuum", tables.vacuum),
    ("autovacuum settings", tables.autovacuum_settings),
    ("bloat", tables.bloat),
    ("xmin horizon", sessions.xmin_horizon),
    ("idle in transaction", sessions.idle_in_transaction),
    ("connections", server.connections),
    ("invalid indexes", tables.invalid_indexes),
    ("queue lag", queue.queue_lag),
    ("heartbeats", queue.heartbeats),
    ("notifications", queue.notifications),
)
# The checks that read the schema's own tables: on a schema that is not migrated they
# say so instead of running.
NEED_SCHEMA = frozenset(
    {
        "vacuum",
        "autovacuum settings",
        "bloat",
        "invalid indexes",
        "queue lag",
        "heartbeats",
        "notifications",
    }
)
# How long one of the doctor's statements may run on its own connection.
STATEMENT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Repaired:
    """What applying one repair did: `outcome` says what changed, or why it failed."""

    what: str
    done: bool
    outcome: str


def run_checks(
    app: App,
    conn: psycopg.Connection[Any],
    thresholds: Thresholds | None = None,
    checks: tuple[tuple[str, CheckFunction], ...] = CHECKS,
    *,
    measure: bool = True,
) -> list[Finding]:
    """Every check's finding, in order, on `conn` (autocommit, or in a transaction:
    each check runs in a savepoint of its own). Raises only when the connection breaks.

    `measure=False` keeps the bloat check to the statistics' estimate, even where
    pgstattuple_approx could measure (it reads every page not all-visible): for a caller
    that checks often, such as a dashboard page.
    """
    statements = DoctorStatements(app.data.sql)
    with conn.transaction():
        facts = statements.facts(conn)
        schema_state = app.data.inspect.schema_revision(conn)
    ctx = Context(
        app.schema,
        conn,
        statements,
        TableStatements(app.data.sql),
        thresholds or Thresholds(),
        facts,
        schema_state,
        measure=measure,
    )
    return [_run(ctx, name, check) for name, check in checks]


def _run(ctx: Context, name: str, check: CheckFunction) -> Finding:
    if name in NEED_SCHEMA and not ctx.migrated:
        return Finding(
            name,
            "warn",
            f"not checked: schema {ctx.schema!r} is not migrated",
            migrate_command(ctx.schema),
        )
    try:
        with ctx.conn.transaction():
            return check(ctx)
    except (psycopg.Error, PgJobsError) as error:
        if ctx.conn.broken:
            raise
        fix = ""
        if isinstance(error, psycopg.errors.InsufficientPrivilege):
            fix = f"run pgjobs doctor as a role that may (the schema's owner), not {ctx.facts.role}"
        return Finding(name, "warn", f"could not check: {first_line(error)}", fix)


def diagnose(app: App, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every check's finding, on a connection of the doctor's own whose statements give
    up after STATEMENT_TIMEOUT seconds rather than wait behind a lock."""
    with closing(connect(app.database.url, autocommit=True)) as conn:
        DoctorStatements(app.data.sql).limit_statements(conn, STATEMENT_TIMEOUT)
        return run_checks(app, conn, thresholds)


def repair(app: App, findings: list[Finding]) -> list[Repaired]:
    """Apply every repair the findings carry, each on its own (a failed one does not stop
    the next), on an autocommit connection whose statements wait at most LOCK_TIMEOUT
    seconds for a lock."""
    wanted: list[Repair] = [fix for finding in findings for fix in finding.repairs]
    if not wanted:
        return []
    done: list[Repaired] = []
    with closing(connect(app.database.url, autocommit=True)) as conn:
        TableStatements(app.data.sql).limit_lock_waits(conn, LOCK_TIMEOUT.total_seconds())
        for fix in wanted:
            try:
                done.append(Repaired(fix.what, True, fix.apply(conn)))
            except RepairFailed as refused:
                done.append(Repaired(fix.what, False, str(refused)))
            except psycopg.Error as error:
                if conn.broken:
                    raise
                done.append(Repaired(fix.what, False, reason(error)))
    return done
