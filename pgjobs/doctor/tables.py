"""Checks of pgjobs' tables and indexes: dead rows and (auto)vacuum, autovacuum settings,
bloat, invalid indexes. The last two of these offer the only repairs `--fix` applies."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from pgjobs.data.doctor_tables import Bloat, InvalidIndex, TableHealth, TableStatements
from pgjobs.db import first_line
from pgjobs.doctor.findings import (
    LOCK_TIMEOUT,
    Context,
    Finding,
    Repair,
    RepairFailed,
    Status,
    Thresholds,
    age,
    ident,
    listed,
    plural,
    reason,
    size,
    worst,
)
from pgjobs.schema import JOBS_STORAGE_PARAMETERS

# The autovacuum settings pgjobs gives the jobs table (pgjobs.schema); a table may be
# more eager than these, not less.
JOBS_AUTOVACUUM = {
    name: value for name, value in JOBS_STORAGE_PARAMETERS.items() if name.startswith("autovacuum_")
}
DISABLED = ("autovacuum_enabled", "toast.autovacuum_enabled")
# How PostgreSQL spells false in a boolean setting (any unique prefix of off, false, no).
FALSE_WORDS = frozenset({"false", "fals", "fal", "fa", "f", "off", "of", "no", "n", "0"})
# An index a failed REINDEX CONCURRENTLY leaves beside the original (which stays valid).
REINDEX_LEFTOVER = re.compile(r".*_cc(new|old)\d*")
# A table this big that was never analyzed leaves the planner guessing.
UNANALYZED_ROWS = 1_000
# A session idle in a transaction this long is taken for one that will not end soon.
IDLE_GRACE = timedelta(seconds=1)


def vacuum(ctx: Context) -> Finding:
    """Dead rows of each table against the thresholds, with its last (auto)vacuum and
    analyze: many dead rows mean autovacuum cannot keep up, or may not remove them."""
    name, t = "vacuum", ctx.thresholds
    defaults = ctx.tables.autovacuum_defaults(ctx.conn)
    if not defaults.track_counts:
        return Finding(
            name,
            "warn",
            "track_counts is off: the server keeps no table statistics, and autovacuum cannot run",
            "set track_counts = on (postgresql.conf, then SELECT pg_reload_conf())",
        )
    tables = ctx.tables.tables(ctx.conn)
    if not tables:
        return Finding(name, "warn", f"schema {ctx.schema!r} has no tables", "")
    now = datetime.now(timezone.utc)
    judged = [(_dead_status(table, t), table) for table in tables]
    status = worst([verdict for verdict, _ in judged])
    if status == "ok":
        jobs = next((table for table in tables if table.name == "jobs_live"), tables[0])
        dead = sum(table.dead_rows for table in tables)
        return Finding(
            name,
            "ok",
            f"{plural(len(tables), 'table')}, {plural(dead, 'dead row')} in all; "
            + _history(jobs, now),
        )
    flagged = [table for verdict, table in judged if verdict != "ok"]
    worst_table = next(table for verdict, table in judged if verdict == status)
    return Finding(
        name,
        status,
        listed(
            [_dead(table, now, defaults.threshold, defaults.scale_factor) for table in flagged],
            len(flagged),
        ),
        f"VACUUM (ANALYZE) {ident(ctx.schema, worst_table.name)}; if dead rows keep piling up, see "
        "the xmin horizon check (what holds them) and the autovacuum settings",
    )


def _dead_status(table: TableHealth, t: Thresholds) -> Status:
    """fail or warn by dead rows (a count and a share of the rows); a sizeable table
    never analyzed warns too."""
    dead, rows = table.dead_rows, table.dead_rows + table.live_rows
    share = dead / rows if rows else 0.0
    if dead >= t.dead_rows_fail and share >= t.dead_share_fail:
        return "fail"
    never_analyzed = table.analyzed_at is None
    if (dead >= t.dead_rows_warn and share >= t.dead_share_warn) or (
        never_analyzed and max(table.live_rows, table.estimated_rows) >= UNANALYZED_ROWS
    ):
        return "warn"
    return "ok"


def _history(table: TableHealth, now: datetime) -> str:
    vacuumed = f"{age(now - table.vacuumed_at)} ago" if table.vacuumed_at else "never"
    analyzed = f"{age(now - table.analyzed_at)} ago" if table.analyzed_at else "never"
    return f"{table.name} last vacuumed {vacuumed}, analyzed {analyzed}"


def _dead(table: TableHealth, now: datetime, threshold: float, scale_factor: float) -> str:
    """A table's dead rows, its history, and where autovacuum starts for it."""
    rows = table.dead_rows + table.live_rows
    share = f" ({table.dead_rows / rows:.0%} of its rows)" if rows else ""
    factor = float(table.options.get("autovacuum_vacuum_scale_factor", scale_factor))
    base = float(table.options.get("autovacuum_vacuum_threshold", threshold))
    starts = int(base + factor * table.estimated_rows)
    never = "" if table.analyzed_at else ", never analyzed: the planner guesses"
    return (
        f"{table.name}: {plural(table.dead_rows, 'dead row')}{share}, {_history(table, now)}"
        f"{never}; autovacuum starts at {starts:,} dead rows"
    )


def autovacuum_settings(ctx: Context) -> Finding:
    """Autovacuum is on for the server and every table, and the jobs table keeps the
    eager settings pgjobs gives it: the fixable part of keeping dead rows in check."""
    name = "autovacuum settings"
    defaults = ctx.tables.autovacuum_defaults(ctx.conn)
    if not defaults.enabled:
        return Finding(
            name,
            "fail",
            "autovacuum is off for the whole server: dead rows pile up until someone runs VACUUM",
            "set autovacuum = on (ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf())",
        )
    problems: list[str] = []
    repairs: list[Repair] = []
    for table in ctx.tables.tables(ctx.conn):
        disabled = [option for option in DISABLED if _off(table.options.get(option))]
        if disabled:
            problems.append(f"{table.name}: {', '.join(disabled)} off")
            repairs.append(_reset(ctx.tables, ctx.schema, table.name, disabled))
        if table.jobs_family:
            lax = {
                option: value
                for option, value in JOBS_AUTOVACUUM.items()
                if float(table.options.get(option, "inf")) > float(value)
            }
            if lax:
                now = ", ".join(
                    f"{option} = {table.options[option]}"
                    if option in table.options
                    else f"{option} unset"
                    for option in lax
                )
                problems.append(f"{table.name}: {now} (pgjobs sets {_options(lax)})")
                repairs.append(_set(ctx.tables, ctx.schema, table.name, lax))
    if not problems:
        return Finding(
            name,
            "ok",
            f"autovacuum is on; the jobs table has pgjobs' settings ({_options(JOBS_AUTOVACUUM)})",
        )
    return Finding(
        name,
        "warn",
        listed(problems, len(problems)),
        "pgjobs doctor --fix (" + "; ".join(repair.what for repair in repairs) + ")",
        tuple(repairs),
    )


def _off(value: str | None) -> bool:
    """Whether a boolean storage parameter's text (stored as given) says false."""
    return value is not None and value.strip().lower() in FALSE_WORDS


def _options(options: dict[str, str]) -> str:
    return ", ".join(f"{option} = {value}" for option, value in options.items())


def _set(tables: TableStatements, schema: str, table: str, options: dict[str, str]) -> Repair:
    def apply(conn: psycopg.Connection[Any]) -> str:
        tables.set_options(conn, table, options)
        return f"set {_options(options)} on {ident(schema, table)}"

    return Repair(f"ALTER TABLE {ident(schema, table)} SET ({_options(options)})", apply)


def _reset(tables: TableStatements, schema: str, table: str, options: list[str]) -> Repair:
    def apply(conn: psycopg.Connection[Any]) -> str:
        tables.reset_options(conn, table, options)
        return f"reset {', '.join(options)} of {ident(schema, table)}: autovacuum runs on it again"

    return Repair(f"ALTER TABLE {ident(schema, table)} RESET ({', '.join(options)})", apply)


def bloat(ctx: Context) -> Finding:
    """Space tables and B-tree indexes waste, measured with pgstattuple_approx when this
    role may, else estimated from the statistics (see data/doctor_tables.py)."""
    name, t = "bloat", ctx.thresholds
    installed_in, usable = ctx.tables.pgstattuple(ctx.conn)
    measured = installed_in if usable and ctx.measure else None
    found = ctx.tables.table_bloat(ctx.conn, measured) + ctx.tables.index_bloat(ctx.conn)
    method = (
        "tables measured with pgstattuple_approx"
        if measured
        else (
            "estimated from the statistics"
            + (
                f" (pgstattuple is installed but role {ctx.facts.role} may not run it: "
                "pg_stat_scan_tables)"
                if installed_in and not usable
                else ""
            )
        )
    )
    unknown = [item.name for item in found if item.wasted is None]
    if unknown:
        method += (
            f"; not estimated (never analyzed, or statistics unreadable): {', '.join(unknown)}"
        )
    judged: list[tuple[Status, Bloat]] = []
    for item in found:
        wasted = item.wasted or 0
        share = wasted / item.bytes if item.bytes else 0.0
        status: Status = "ok"
        if wasted >= t.bloat_bytes_fail and share >= t.bloat_share_fail:
            status = "fail"
        elif wasted >= t.bloat_bytes_warn and share >= t.bloat_share_warn:
            status = "warn"
        judged.append((status, item))
    status = worst([verdict for verdict, _ in judged])
    flagged = sorted(
        (item for verdict, item in judged if verdict != "ok"), key=lambda item: -(item.wasted or 0)
    )
    if not flagged:
        largest = max(found, key=lambda item: item.wasted or 0, default=None)
        most = f"; the most: {_wasted(largest)}" if largest is not None and largest.wasted else ""
        return Finding(name, "ok", f"no table or index is bloated{most}; {method}")
    first = flagged[0]
    if first.table_name is None:
        fix = (
            f"prune finished jobs (pgjobs prune) and let autovacuum reuse the space; to give it "
            f"back to the system, pg_repack {ident(ctx.schema, first.name)} (VACUUM FULL locks it)"
        )
    else:
        fix = f"REINDEX INDEX CONCURRENTLY {ident(ctx.schema, first.name)}"
    return Finding(
        name, status, listed([_wasted(item) for item in flagged], len(flagged)) + f"; {method}", fix
    )


def _wasted(item: Bloat) -> str:
    kind = f"index {item.name} on {item.table_name}" if item.table_name else f"table {item.name}"
    share = f" ({(item.wasted or 0) / item.bytes:.0%})" if item.bytes else ""
    return f"{kind}: about {size(item.wasted or 0)} of {size(item.bytes)} wasted{share}"


def invalid_indexes(ctx: Context) -> Finding:
    """Indexes left invalid by a failed CREATE INDEX CONCURRENTLY or REINDEX
    CONCURRENTLY: every write still maintains them, no query uses them."""
    name = "invalid indexes"
    found = ctx.tables.invalid_indexes(ctx.conn)
    if not found:
        return Finding(name, "ok", f"every index of the tables in schema {ctx.schema!r} is valid")
    statuses: list[Status] = []
    fixes: list[str] = []
    repairs: list[Repair] = []
    for index in found:
        qualified = ident(ctx.schema, index.name)
        if index.building_pid is not None:
            statuses.append("warn")
            fixes.append(f"wait for pid {index.building_pid}'s index build on {index.table_name}")
        elif REINDEX_LEFTOVER.fullmatch(index.name):
            statuses.append("fail")
            fixes.append(f"DROP INDEX CONCURRENTLY {qualified} (a failed REINDEX's copy)")
        else:
            statuses.append("fail")
            repair = _reindex(ctx.tables, ctx.schema, index, {i.name for i in found})
            repairs.append(repair)
            fixes.append(
                f"pgjobs doctor --fix ({repair.what}); should it fail again (a unique "
                "index over duplicate values), remove the duplicates or DROP INDEX "
                f"CONCURRENTLY {qualified}"
            )
    described = [_invalid(index) for index in found]
    return Finding(
        name,
        worst(statuses),
        f"{plural(len(found), 'invalid index')}: {listed(described, len(found))}",
        "; ".join(fixes[:2]),
        tuple(repairs),
    )


def _invalid(index: InvalidIndex) -> str:
    building = f", being built by pid {index.building_pid}" if index.building_pid else ""
    return f"{index.name} on {index.table_name} ({size(index.bytes)}{building})"


def _reindex(
    tables: TableStatements, schema: str, index: InvalidIndex, invalid: set[str]
) -> Repair:
    """Rebuild the index concurrently. A concurrent build waits for every older
    transaction, so it does not start while one idles or has been open for the lock
    timeout (it would give up midway). Should it fail anyway, PostgreSQL leaves its copy
    (`<name>_ccnew`, or the old index as `<name>_ccold` past the swap) invalid beside
    it: the repair drops what it left, unless an index build on the table may be
    someone else's."""

    def apply(conn: psycopg.Connection[Any]) -> str:
        waits = tables.old_transactions(conn, idle_for=IDLE_GRACE, open_for=LOCK_TIMEOUT)
        if waits:
            pids = ", ".join(map(str, waits))
            raise RepairFailed(
                f"not started: it would wait for the open transaction of pid {pids}; end "
                "it first (see the idle in transaction and xmin horizon checks)"
            )
        try:
            tables.reindex_concurrently(conn, index.name)
        except psycopg.Error as error:
            if conn.broken:
                raise
            raise RepairFailed(reason(error) + _tidy(conn)) from error
        return f"rebuilt {ident(schema, index.name)}: valid"

    def _tidy(conn: psycopg.Connection[Any]) -> str:
        """Drop the copies the failed build left; what happened to them, in words."""
        left = [
            found.name
            for found in tables.invalid_indexes(conn)
            if found.table_name == index.table_name
            and REINDEX_LEFTOVER.fullmatch(found.name)
            and found.name not in invalid
            and found.building_pid is None
        ]
        said = []
        for name in left:
            try:
                tables.drop_index_concurrently(conn, name)
                said.append(f"dropped the copy it left, {name}")
            except psycopg.Error as error:
                if conn.broken:
                    raise
                said.append(f"left {ident(schema, name)}: {first_line(error)}")
        return "".join(f"; {words}" for words in said)

    return Repair(f"REINDEX INDEX CONCURRENTLY {ident(schema, index.name)}", apply)
