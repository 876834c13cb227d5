"""The doctor's reads of pgjobs' tables and indexes, and its only writes: the safe fixes.

Every table of the schema is pgjobs' (jobs, workers, queues, ... and any partition).
Reads come from the catalogs and the statistics views, which every role may read; the
bloat estimate needs `pg_stats`, which shows a column only to a role that may read it.

Bloat is estimated two ways. With the `pgstattuple` extension installed and its
`pgstattuple_approx` executable by this role (a superuser, or `pg_stat_scan_tables`), a
table's free space and dead rows are measured (it reads the pages the visibility map
does not mark all-visible). Otherwise, and for B-tree indexes always, the size the rows
would take packed is computed from the planner's statistics (`reltuples`, each column's
`avg_width` and `null_frac`, the tuple and page overheads, the fillfactor) and compared
with the relation's pages: the method of the well-known bloat queries, approximate
(alignment padding is rounded per row, B-tree deduplication is ignored, so an index may
read as smaller than expected: never as bloated when it is not). A relation not yet
analyzed has no estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql as psql

from pgjobs.data.connector import rows
from pgjobs.data.group import StatementGroup
from pgjobs.data.steps import Statement

# The server-wide autovacuum settings a table falls back on.
AUTOVACUUM = """
SELECT current_setting('autovacuum') = 'on' AS enabled,
       current_setting('track_counts') = 'on' AS track_counts,
       current_setting('autovacuum_vacuum_threshold')::float8 AS threshold,
       current_setting('autovacuum_vacuum_scale_factor')::float8 AS scale_factor
"""

# Each table's activity statistics and storage parameters; `jobs_family`: the live jobs
# table (and, should it be partitioned, its partitions), which gets the queue's settings.
TABLES = """
SELECT c.relname AS name,
       c.oid = to_regclass(%(jobs_table)s)
           OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%(jobs_table)s)))
           AS jobs_family,
       coalesce(c.reloptions, '{{}}') AS options,
       greatest(c.reltuples, 0)::bigint AS estimated_rows,
       coalesce(s.n_live_tup, 0) AS live_rows, coalesce(s.n_dead_tup, 0) AS dead_rows,
       greatest(s.last_vacuum, s.last_autovacuum) AS vacuumed_at,
       greatest(s.last_analyze, s.last_autoanalyze) AS analyzed_at
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables AS s ON s.relid = c.oid
WHERE n.nspname = %(schema)s AND c.relkind = 'r'
ORDER BY c.relname
"""

# Whether pgstattuple is installed in this database, in which schema, and whether this
# role may run its pgstattuple_approx.
PGSTATTUPLE = """
SELECT n.nspname AS schema,
       coalesce((SELECT has_function_privilege(p.oid, 'EXECUTE') FROM pg_proc AS p
                 WHERE p.pronamespace = e.extnamespace AND p.proname = 'pgstattuple_approx'
                 LIMIT 1), false) AS usable
FROM pg_extension AS e
JOIN pg_namespace AS n ON n.oid = e.extnamespace
WHERE e.extname = 'pgstattuple'
"""

# Tables, measured: free space and dead rows beyond what the fillfactor leaves free.
TABLE_BLOAT_MEASURED = """
SELECT c.relname AS name, NULL::text AS table_name, m.table_len AS bytes,
       greatest(m.approx_free_space + m.dead_tuple_len
                - m.table_len * (100 - coalesce(o.fillfactor, 100)) / 100.0, 0)::bigint
           AS wasted
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL {approx}(c.oid) AS m
LEFT JOIN LATERAL (SELECT option_value::int AS fillfactor
                   FROM pg_options_to_table(c.reloptions)
                   WHERE option_name = 'fillfactor') AS o ON true
WHERE n.nspname = %(schema)s AND c.relkind = 'r'
"""

# Tables, estimated: a row takes its header (23 bytes, and a null bitmap when some
# column has nulls) aligned to 8, its data (each column's average width weighed by how
# often it is not null) aligned to 8, and a 4-byte line pointer; a page holds 8 kB less
# its 24-byte header, filled up to the fillfactor.
TABLE_BLOAT_ESTIMATED = """
WITH tables AS (
    SELECT c.oid, c.relname, c.relpages::bigint AS pages, c.reltuples,
           coalesce((SELECT option_value::int FROM pg_options_to_table(c.reloptions)
                     WHERE option_name = 'fillfactor'), 100) AS fillfactor
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s AND c.relkind = 'r'
), widths AS (
    SELECT t.oid, count(*) AS columns, count(s.avg_width) AS analyzed,
           coalesce(sum((1 - s.null_frac) * s.avg_width), 0) AS width,
           coalesce(bool_or(s.null_frac > 0), false) AS nulls
    FROM tables AS t
    JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_stats AS s
      ON s.schemaname = %(schema)s AND s.tablename = t.relname AND s.attname = a.attname
     AND NOT s.inherited
    GROUP BY t.oid
), sized AS (
    SELECT t.relname, t.pages, current_setting('block_size')::int AS block,
           CASE WHEN w.analyzed = w.columns AND t.reltuples >= 0 THEN
               ceil(t.reltuples
                    * (ceil((23 + CASE WHEN w.nulls THEN ceil(w.columns / 8.0) ELSE 0 END)
                            / 8.0) * 8 + ceil(w.width / 8.0) * 8 + 4)
                    / ((current_setting('block_size')::int - 24) * t.fillfactor / 100.0))
           END AS expected_pages
    FROM tables AS t
    JOIN widths AS w ON w.oid = t.oid
)
SELECT relname AS name, NULL::text AS table_name, pages * block AS bytes,
       (greatest(pages - expected_pages, 0) * block)::bigint AS wasted
FROM sized
"""

# B-tree indexes, estimated: an entry takes its 8-byte header and key (the columns'
# average widths; an expression's from the index's own statistics) aligned to 8, and a
# line pointer; a leaf page holds 8 kB less its header and the 16-byte B-tree trailer,
# filled up to the fillfactor (90 by default); one metapage, and at least one leaf.
# Internal pages are ignored.
INDEX_BLOAT_ESTIMATED = """
WITH indexes AS (
    SELECT i.indexrelid, ic.relname, tc.relname AS table_name, i.indkey,
           ic.relpages::bigint AS pages, ic.reltuples,
           coalesce((SELECT option_value::int FROM pg_options_to_table(ic.reloptions)
                     WHERE option_name = 'fillfactor'), 90) AS fillfactor
    FROM pg_index AS i
    JOIN pg_class AS ic ON ic.oid = i.indexrelid
    JOIN pg_class AS tc ON tc.oid = i.indrelid
    JOIN pg_namespace AS n ON n.oid = tc.relnamespace
    JOIN pg_am AS am ON am.oid = ic.relam
    WHERE n.nspname = %(schema)s AND am.amname = 'btree' AND i.indisvalid
), keys AS (
    SELECT x.indexrelid, count(*) AS columns, count(s.avg_width) AS analyzed,
           coalesce(sum(s.avg_width), 0) AS width
    FROM indexes AS x
    JOIN pg_attribute AS ia ON ia.attrelid = x.indexrelid AND ia.attnum > 0
    LEFT JOIN pg_stats AS s
      ON s.schemaname = %(schema)s AND NOT s.inherited AND s.attname = ia.attname
     AND s.tablename = CASE WHEN x.indkey[ia.attnum - 1] = 0 THEN x.relname
                            ELSE x.table_name END
    GROUP BY x.indexrelid
), sized AS (
    SELECT x.relname, x.table_name, x.pages, current_setting('block_size')::int AS block,
           CASE WHEN k.analyzed = k.columns AND x.reltuples >= 0 THEN
               1 + greatest(1, ceil(x.reltuples * (ceil((8 + k.width) / 8.0) * 8 + 4)
                                    / ((current_setting('block_size')::int - 24 - 16)
                                       * x.fillfactor / 100.0)))
           END AS expected_pages
    FROM indexes AS x
    JOIN keys AS k ON k.indexrelid = x.indexrelid
)
SELECT relname AS name, table_name, pages * block AS bytes,
       (greatest(pages - expected_pages, 0) * block)::bigint AS wasted
FROM sized
"""

# Indexes on the schema's tables that no query may use: a CREATE INDEX CONCURRENTLY or
# REINDEX CONCURRENTLY that failed (or is running: `building_pid`, an index build on
# the same table now).
INVALID_INDEXES = """
SELECT ic.relname AS name, tc.relname AS table_name,
       pg_relation_size(i.indexrelid) AS bytes,
       (SELECT p.pid FROM pg_stat_progress_create_index AS p
        WHERE p.relid = i.indrelid LIMIT 1) AS building_pid
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_class AS tc ON tc.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = tc.relnamespace
WHERE n.nspname = %(schema)s AND NOT i.indisvalid
ORDER BY ic.relname
"""

# A fix waits at most this long for a lock, instead of queueing behind a long
# transaction; REINDEX CONCURRENTLY also waits for every transaction older than it.
LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %(timeout)s, false)"

# Transactions of this database a concurrent index build would wait for, and likely
# past the lock timeout: idle in a transaction (the build waits for every snapshot
# older than its own), or open for longer than `open_for`. Oldest first.
OLD_TRANSACTIONS = """
SELECT a.pid
FROM pg_stat_activity AS a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND ((a.state LIKE 'idle in transaction%%' AND a.state_change <= now() - %(idle_for)s)
       OR a.xact_start <= now() - %(open_for)s)
ORDER BY a.xact_start
LIMIT 5
"""


@dataclass(frozen=True)
class AutovacuumDefaults:
    """The server's autovacuum settings that tables without their own fall back on."""

    enabled: bool
    track_counts: bool
    threshold: float
    scale_factor: float


@dataclass(frozen=True)
class TableHealth:
    """A table's size estimate, activity statistics and storage parameters."""

    name: str
    jobs_family: bool
    options: dict[str, str]
    estimated_rows: int
    live_rows: int
    dead_rows: int
    vacuumed_at: datetime | None
    analyzed_at: datetime | None


@dataclass(frozen=True)
class Bloat:
    """A table's or index's size and the bytes of it estimated to be wasted (None: no
    estimate, the statistics are missing or unreadable)."""

    name: str
    table_name: str | None  # an index's table; None for a table
    bytes: int
    wasted: int | None


@dataclass(frozen=True)
class InvalidIndex:
    """An index that is not valid, and the pid of an index build on its table, if any."""

    name: str
    table_name: str
    bytes: int
    building_pid: int | None


class TableStatements(StatementGroup):
    """The doctor's reads of the schema's tables and indexes, and the safe fixes."""

    def autovacuum_defaults(self, conn: Any) -> AutovacuumDefaults:
        [row] = self._rows(conn, AUTOVACUUM, named=True).dicts()
        return AutovacuumDefaults(**row)

    def tables(self, conn: Any) -> list[TableHealth]:
        params = {"schema": self.schema, "jobs_table": self.sql.live.as_string()}
        found = self._rows(conn, TABLES, params, named=True).dicts()
        return [TableHealth(**{**row, "options": _options(row["options"])}) for row in found]

    def pgstattuple(self, conn: Any) -> tuple[str | None, bool]:
        """(the schema pgstattuple is installed in, None when it is not; whether this role
        may run pgstattuple_approx)."""
        found = self._rows(conn, PGSTATTUPLE)
        return (found[0][0], bool(found[0][1])) if found else (None, False)

    def table_bloat(self, conn: Any, pgstattuple_schema: str | None) -> list[Bloat]:
        """Each table's bloat: measured with pgstattuple_approx from `pgstattuple_schema`,
        else estimated from the statistics."""
        if pgstattuple_schema is None:
            return self._bloat(conn, self.sql.render(TABLE_BLOAT_ESTIMATED))
        approx = psql.Identifier(pgstattuple_schema, "pgstattuple_approx")
        return self._bloat(conn, _sql(psql.SQL(TABLE_BLOAT_MEASURED).format(approx=approx)))

    def index_bloat(self, conn: Any) -> list[Bloat]:
        """Each valid B-tree index's bloat, estimated from the statistics."""
        return self._bloat(conn, self.sql.render(INDEX_BLOAT_ESTIMATED))

    def invalid_indexes(self, conn: Any) -> list[InvalidIndex]:
        found = self._rows(conn, INVALID_INDEXES, {"schema": self.schema}, named=True).dicts()
        return [InvalidIndex(**row) for row in found]

    def old_transactions(self, conn: Any, *, idle_for: timedelta, open_for: timedelta) -> list[int]:
        """The pids of transactions a concurrent index build would wait for long."""
        params = {"idle_for": idle_for, "open_for": open_for}
        return [pid for (pid,) in self._rows(conn, OLD_TRANSACTIONS, params)]

    def limit_lock_waits(self, conn: Any, seconds: float) -> None:
        """Give up any later statement of this session that waits `seconds` for a lock."""
        self._rows(conn, LOCK_TIMEOUT, {"timeout": f"{max(1, round(seconds * 1000))}ms"})

    def set_options(self, conn: Any, table: str, options: Mapping[str, str]) -> None:
        """`ALTER TABLE ... SET (name = value, ...)`: storage parameters, which take a
        lock that neither reads nor writes wait for."""
        settings = psql.SQL(", ").join(
            psql.SQL("{} = {}").format(psql.Identifier(name), psql.Literal(value))
            for name, value in options.items()
        )
        self._ddl(conn, psql.SQL("ALTER TABLE {} SET ({})").format(self._name(table), settings))

    def reset_options(self, conn: Any, table: str, names: Sequence[str]) -> None:
        """`ALTER TABLE ... RESET (name, ...)`: back to the server's settings."""
        listed = psql.SQL(", ").join(psql.Identifier(name) for name in names)
        self._ddl(conn, psql.SQL("ALTER TABLE {} RESET ({})").format(self._name(table), listed))

    def reindex_concurrently(self, conn: Any, index: str) -> None:
        """Rebuild `index` without blocking writes (autocommit `conn` only)."""
        self._ddl(conn, psql.SQL("REINDEX INDEX CONCURRENTLY {}").format(self._name(index)))

    def drop_index_concurrently(self, conn: Any, index: str) -> None:
        """Drop `index` without blocking writes (autocommit `conn` only)."""
        statement = psql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}")
        self._ddl(conn, statement.format(self._name(index)))

    def _name(self, relation: str) -> psql.Identifier:
        return psql.Identifier(self.schema, relation)

    def _ddl(self, conn: Any, statement: psql.Composed) -> None:
        rows(conn, self.schema, Statement(_sql(statement)))

    def _bloat(self, conn: Any, query: psql.SQL) -> list[Bloat]:
        found = rows(conn, self.schema, Statement(query, {"schema": self.schema}, named=True))
        return [Bloat(**row) for row in found.dicts()]


def _sql(composed: psql.Composed) -> psql.SQL:
    """Composed statement text as the plain `SQL` a `Statement` carries."""
    return psql.SQL(composed.as_string())


def _options(options: list[str]) -> dict[str, str]:
    """`reloptions` (`["name=value", ...]`) as a dict."""
    return dict(option.split("=", 1) for option in options)
