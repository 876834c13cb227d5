"""Checks of the server as a whole: its version, the schema's migrations, connections."""

from __future__ import annotations

from pgjobs.data.doctor import FleetUse
from pgjobs.doctor.findings import Context, Finding, ident, judge, plural, worst
from pgjobs.errors import migrate_command
from pgjobs.schema_revision import package_revisions
from pgjobs.worker.shared_connections import DEFAULT_MAX_SIZE

# The PostgreSQL major versions pgjobs supports (SPEC "Operations at scale").
OLDEST_SUPPORTED = 14
NEWEST_TESTED = 18
# The most connections one worker opens (docs/pgbouncer.md, "A worker's connection
# budget"): its shared ones in a drain, the listener's, and the maintenance one of a
# worker that leads; whatever its --concurrency.
WORKER_CONNECTIONS = DEFAULT_MAX_SIZE + 2
# The App's pool (pgjobs.db.Database's max_size), which a worker opens only when its
# tasks enqueue with conn=None.
APP_POOL_CONNECTIONS = 10


def server_version(ctx: Context) -> Finding:
    """The server is a version pgjobs supports."""
    return version_verdict(ctx.facts.version_num, ctx.facts.version)


def version_verdict(version_num: int, version: str) -> Finding:
    """The verdict on `server_version_num`: older than supported fails, newer than tested
    warns."""
    major = version_num // 10000
    supported = f"pgjobs supports PostgreSQL {OLDEST_SUPPORTED} to {NEWEST_TESTED}"
    if major < OLDEST_SUPPORTED:
        return Finding(
            "server version",
            "fail",
            f"PostgreSQL {version} is too old: {supported}",
            f"upgrade the server to PostgreSQL {OLDEST_SUPPORTED} or newer (pg_upgrade)",
        )
    if major > NEWEST_TESTED:
        return Finding(
            "server version",
            "warn",
            f"PostgreSQL {version} is newer than pgjobs is tested on: {supported}",
            "run the test suite against it (PGJOBS_TEST_DATABASE_URL), or report a problem",
        )
    return Finding("server version", "ok", f"PostgreSQL {version} ({supported})")


def migrations(ctx: Context) -> Finding:
    """The schema has every migration this pgjobs ships."""
    name, schema, fix = "migrations", ctx.schema, migrate_command(ctx.schema)
    known = package_revisions()
    if not ctx.migrated:
        return Finding(
            name, "fail", f"schema {schema!r} is not migrated: it has no jobs table", fix
        )
    if ctx.revision is None:
        return Finding(
            name,
            "warn",
            f"pending migrations not checked: role {ctx.facts.role} may not read "
            f"{ident(schema, 'alembic_version')}",
            f"GRANT SELECT ON {ident(schema, 'alembic_version')} TO {ident(ctx.facts.role)}",
        )
    if ctx.revision in known[:-1]:
        pending = known[known.index(ctx.revision) + 1 :]
        return Finding(
            name,
            "fail",
            f"schema {schema!r} is at revision {ctx.revision}; "
            f"{plural(len(pending), 'migration')} pending: {', '.join(pending)}",
            fix,
        )
    if ctx.revision not in known:
        return Finding(
            name,
            "ok",
            f"schema at revision {ctx.revision}, newer than this pgjobs ({known[-1]}): "
            "a rolling deploy",
        )
    return Finding(name, "ok", f"schema at the newest revision ({ctx.revision})")


def connections(ctx: Context) -> Finding:
    """Connections in use against max_connections, and the live workers' budget."""
    use = ctx.statements.connections(ctx.conn)
    usable = max(1, use.max_connections - use.reserved)
    status = judge(
        use.in_use / usable, ctx.thresholds.connections_warn, ctx.thresholds.connections_fail
    )
    message = (
        f"{use.in_use} of {usable} connections in use (max_connections {use.max_connections}, "
        f"{use.reserved} reserved)"
    )
    if use.hidden and not ctx.may_read_all_stats():
        message += f", counted without seeing the type of {plural(use.hidden, 'session')}"
    fleet, problem = ctx.fleet()
    over_budget = False
    if fleet is None:
        message += f"; the workers' budget not checked: {problem}"
    else:
        message += "; " + _budget(fleet)
        others = use.in_use - fleet.worker_connections
        over_budget = others + fleet.live_workers * WORKER_CONNECTIONS > usable
        if over_budget:
            message += f", more than the {usable - others} left by the other connections"
    status = worst([status, "warn" if over_budget else "ok"])
    fix = ""
    if status != "ok":
        fix = (
            "put PgBouncer (transaction mode) in front of producers and workers "
            "(docs/pgbouncer.md) or raise max_connections; fewer workers with more "
            "--concurrency each need fewer"
        )
    return Finding("connections", status, message, fix)


def _budget(fleet: FleetUse) -> str:
    """The live workers' connections now, and the most they may open."""
    workers = plural(fleet.live_workers, "live worker")
    if not fleet.live_workers:
        return "no live worker"
    return (
        f"{workers} ({plural(fleet.threads, 'thread')}) hold {fleet.worker_connections} "
        "(counted by their application_name) and may open up to "
        f"{fleet.live_workers * WORKER_CONNECTIONS} in a drain ({WORKER_CONNECTIONS} each: "
        f"{DEFAULT_MAX_SIZE} shared, the listener, maintenance), plus up to "
        f"{APP_POOL_CONNECTIONS} each for the App's pool when tasks enqueue with conn=None"
    )
