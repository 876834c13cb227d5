"""The doctor's reads of the server and of pgjobs' queue (pgjobs.doctor): who holds the
xmin horizon, who idles in a transaction, how many connections are in use and by whom,
the oldest waiting job, running jobs without a heartbeat, the wake-up trigger.

Every read is bounded: the activity views are small by nature, the queue is read through
its partial indexes. A role without `pg_read_all_stats` sees other roles' sessions in
`pg_stat_activity` with their pid, user, application and xids but not their state,
start or query (`<insufficient privilege>`); the reads return those as None and count
the hidden sessions, so that a check can say what it could not see. The tables' reads
(statistics, bloat, indexes) and the safe fixes are in `doctor_tables.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pgjobs.data.group import StatementGroup
from pgjobs.data.maintenance import MaintenanceStatements
from pgjobs.data.sql import SchemaSQL

# What pg_stat_activity shows a role without pg_read_all_stats for another role's query.
HIDDEN_QUERY = "<insufficient privilege>"
# The characters of a session's query a finding quotes.
QUERY_CHARS = 120
# The rows a check reads at most of each kind (sessions, holders, jobs).
ROWS_LIMIT = 20
# The (queue, priority) groups of waiting jobs the queue-lag read visits at most.
LAG_GROUPS = 1_000

FACTS = """
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       current_user AS role,
       coalesce(pg_has_role(to_regrole('pg_read_all_stats'), 'USAGE'), false)
           AS read_all_stats
"""

# A session-level statement timeout for the doctor's own connection: a check waiting
# behind a lock (a migration's, a VACUUM FULL's) gives up instead of hanging the report.
STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %(timeout)s, false)"

# Whatever keeps VACUUM from removing dead rows in this database: a session's snapshot
# or transaction id (sessions of other databases only hold back the shared catalogs),
# a prepared transaction, a replication slot's xmin (a standby's hot_standby_feedback)
# and its catalog_xmin (logical decoding: the system catalogs only). Oldest first.
HORIZON = """
SELECT 'session' AS kind, a.pid, a.usename AS role, a.application_name AS application,
       a.state, NULL::text AS name, NULL::text AS detail,
       greatest(age(a.backend_xid), age(a.backend_xmin)) AS xid_age,
       now() - a.xact_start AS held_for,
       CASE WHEN a.query <> %(hidden)s THEN left(a.query, %(chars)s) END AS query
FROM pg_stat_activity AS a
WHERE a.pid <> pg_backend_pid()
  AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
  AND (a.datid IS NULL OR a.datname = current_database())
UNION ALL
SELECT 'prepared', NULL, p.owner, NULL, NULL, p.gid, p.database, age(p.transaction),
       now() - p.prepared, NULL
FROM pg_prepared_xacts AS p
WHERE p.database = current_database()
UNION ALL
SELECT 'slot', s.active_pid, NULL, NULL,
       CASE WHEN s.active THEN 'active' ELSE 'inactive' END, s.slot_name, s.slot_type,
       age(s.xmin), NULL, NULL
FROM pg_replication_slots AS s
WHERE s.xmin IS NOT NULL
UNION ALL
SELECT 'catalog slot', s.active_pid, NULL, NULL,
       CASE WHEN s.active THEN 'active' ELSE 'inactive' END, s.slot_name, s.slot_type,
       age(s.catalog_xmin), NULL, NULL
FROM pg_replication_slots AS s
WHERE s.catalog_xmin IS NOT NULL
ORDER BY xid_age DESC NULLS LAST
LIMIT %(limit)s
"""

# Sessions of this database idle in a transaction for longer than `after`, longest
# first, with how many there are in all.
IDLE_IN_TRANSACTION = """
SELECT a.pid, a.usename AS role, a.application_name AS application, a.state,
       now() - a.state_change AS idle_for, now() - a.xact_start AS open_for,
       left(a.query, %(chars)s) AS query, count(*) OVER () AS total
FROM pg_stat_activity AS a
WHERE a.datname = current_database()
  AND a.pid <> pg_backend_pid()
  AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND a.state_change <= now() - %(after)s
ORDER BY a.state_change
LIMIT %(limit)s
"""

# Client connections against max_connections less the slots reserved for superusers
# (and, from PostgreSQL 16, for pg_use_reserved_connections). Another role's session
# shows no backend_type to a role without pg_read_all_stats: a session with a database
# and a user is then counted as a client.
CONNECTIONS = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
           + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)
           AS reserved,
       count(*) FILTER (WHERE a.backend_type = 'client backend'
                        OR (a.backend_type IS NULL AND a.datid IS NOT NULL
                            AND a.usesysid IS NOT NULL)) AS in_use,
       count(*) FILTER (WHERE a.query = %(hidden)s AND a.datname = current_database())
           AS hidden
FROM pg_stat_activity AS a
"""

# The live workers of this schema (a heartbeat within their own rescue_after), the
# connections they hold (each carries `application_name = '<prefix> <worker id>'`,
# clipped at 63 bytes like the server does), and the sessions LISTENing on the schema's
# channel: a listener runs LISTEN and nothing else, so its last query stays that one.
FLEET = """
WITH live AS (
    SELECT id, concurrency FROM {workers}
    WHERE last_heartbeat_at > now() - make_interval(secs => rescue_after)
)
SELECT (SELECT count(*) FROM live) AS live_workers,
       (SELECT coalesce(sum(concurrency), 0) FROM live) AS threads,
       (SELECT now() - max(last_heartbeat_at) FROM {workers}) AS since_last_beat,
       (SELECT count(*) FROM pg_stat_activity AS a
        WHERE a.application_name IN (SELECT left(%(prefix)s || ' ' || id, 63) FROM live))
           AS worker_connections,
       (SELECT count(*) FROM pg_stat_activity AS a
        WHERE a.query = %(listen)s AND a.datname = current_database()) AS listeners
"""

# The oldest due job of each queue: a skip scan of the fetch index visits the first job
# of each (queue, priority) group, whose run_at is that group's earliest, instead of
# every waiting job. Whether a live worker serves the queue, and whether it is paused.
OLDEST_WAITING = """
WITH RECURSIVE heads AS (
    (SELECT queue, priority, run_at, id, task, 1 AS visited FROM {jobs}
     WHERE state = 'available'
     ORDER BY queue, priority DESC, run_at, id LIMIT 1)
    UNION ALL
    SELECT f.queue, f.priority, f.run_at, f.id, f.task, h.visited + 1
    FROM heads AS h
    CROSS JOIN LATERAL (
        (SELECT queue, priority, run_at, id, task FROM {jobs}
         WHERE state = 'available' AND queue = h.queue AND priority < h.priority
         ORDER BY priority DESC, run_at, id LIMIT 1)
        UNION ALL
        (SELECT queue, priority, run_at, id, task FROM {jobs}
         WHERE state = 'available' AND queue > h.queue
         ORDER BY queue, priority DESC, run_at, id LIMIT 1)
        LIMIT 1
    ) AS f
    WHERE h.visited < %(groups)s
), oldest AS (
    SELECT DISTINCT ON (queue) queue, id, task, run_at
    FROM heads WHERE run_at <= now()
    ORDER BY queue, run_at, id
), live AS (
    SELECT queues FROM {workers}
    WHERE last_heartbeat_at > now() - make_interval(secs => rescue_after)
)
SELECT o.queue, o.id, o.task, now() - o.run_at AS waited,
       coalesce(q.paused, false) AS paused,
       EXISTS (SELECT FROM live WHERE live.queues IS NULL OR o.queue = ANY(live.queues))
           AS served,
       (SELECT max(visited) FROM heads) >= %(groups)s AS partial
FROM oldest AS o
LEFT JOIN {queues} AS q ON q.name = o.queue
ORDER BY waited DESC, o.queue
"""

# Running jobs whose heartbeat is older than their worker's rescue_after (`default`
# when the worker's row is gone), or missing, stalest first, with how many in all.
STALE_RUNNING = """
SELECT j.id, j.task, j.worker_id, now() - j.heartbeat_at AS silent_for,
       coalesce(w.rescue_after, %(default)s) AS rescue_after, count(*) OVER () AS total
FROM {jobs} AS j
LEFT JOIN {workers} AS w ON w.id = j.worker_id
WHERE j.state = 'running'
  AND (j.heartbeat_at IS NULL
       OR j.heartbeat_at < now() - make_interval(secs => coalesce(w.rescue_after, %(default)s)))
ORDER BY j.heartbeat_at NULLS FIRST, j.id
LIMIT %(limit)s
"""

# The wake-up trigger's state (`O` fires, `D` is disabled, `R` fires only under
# session_replication_role = replica, `A` always; NULL: missing), and how full the
# server's notification queue is (a listener that stopped reading fills it; at 100%
# every NOTIFY, and so every enqueue's commit, fails).
NOTIFICATIONS = """
SELECT (SELECT t.tgenabled::text FROM pg_trigger AS t
        WHERE t.tgrelid = to_regclass(%(jobs_table)s) AND t.tgname = 'jobs_notify_available')
           AS trigger_state,
       pg_notification_queue_usage() AS queue_usage
"""


@dataclass(frozen=True)
class ServerFacts:
    """The server and the role the doctor runs as."""

    version_num: int
    version: str
    role: str
    read_all_stats: bool


@dataclass(frozen=True)
class HorizonHolder:
    """Something holding back the xmin horizon. `kind`: session, prepared, slot (its
    xmin holds back every table) or catalog slot (its catalog_xmin, the catalogs only).
    None where the role may not see it (another role's state, start, query)."""

    kind: str
    pid: int | None
    role: str | None
    application: str | None
    state: str | None
    name: str | None  # the prepared transaction's gid, the slot's name
    detail: str | None  # the prepared transaction's database, the slot's type
    xid_age: int | None
    held_for: timedelta | None
    query: str | None


@dataclass(frozen=True)
class IdleSession:
    """A session idle in a transaction."""

    pid: int
    role: str | None
    application: str | None
    state: str
    idle_for: timedelta
    open_for: timedelta | None
    query: str | None


@dataclass(frozen=True)
class ConnectionUse:
    """Client connections of the whole server, and how many sessions of this database
    this role may not see the details of."""

    max_connections: int
    reserved: int
    in_use: int
    hidden: int


@dataclass(frozen=True)
class FleetUse:
    """The schema's live workers and what they hold on the server."""

    live_workers: int
    threads: int
    since_last_beat: timedelta | None  # None: no worker row at all
    worker_connections: int
    listeners: int


@dataclass(frozen=True)
class WaitingQueue:
    """A queue's oldest due job and how long it has waited."""

    queue: str
    id: int
    task: str
    waited: timedelta
    paused: bool
    served: bool
    partial: bool


@dataclass(frozen=True)
class StaleJob:
    """A running job whose heartbeat is older than its worker's rescue_after."""

    id: int
    task: str
    worker_id: str | None
    silent_for: timedelta | None
    rescue_after: float


class DoctorStatements(StatementGroup):
    """The doctor's reads of the server's activity and of the schema's queue."""

    def __init__(self, sql: SchemaSQL) -> None:
        super().__init__(sql)
        self.listen_statement = MaintenanceStatements(sql).listen_statement.as_string()

    def facts(self, conn: Any) -> ServerFacts:
        [row] = self._rows(conn, FACTS, named=True).dicts()
        return ServerFacts(**row)

    def limit_statements(self, conn: Any, seconds: float) -> None:
        """Cancel any later statement of this session that runs longer than `seconds`."""
        self._rows(conn, STATEMENT_TIMEOUT, {"timeout": f"{max(1, round(seconds * 1000))}ms"})

    def horizon(self, conn: Any) -> list[HorizonHolder]:
        params = {"hidden": HIDDEN_QUERY, "chars": QUERY_CHARS, "limit": ROWS_LIMIT}
        return [
            HorizonHolder(**row) for row in self._rows(conn, HORIZON, params, named=True).dicts()
        ]

    def idle_in_transaction(self, conn: Any, after: timedelta) -> tuple[list[IdleSession], int]:
        """(the sessions idle in a transaction for longer than `after`, longest first and
        at most ROWS_LIMIT, how many there are)."""
        params = {"after": after, "chars": QUERY_CHARS, "limit": ROWS_LIMIT}
        found = self._rows(conn, IDLE_IN_TRANSACTION, params, named=True).dicts()
        total = int(found[0]["total"]) if found else 0
        return [IdleSession(**_without(row, "total")) for row in found], total

    def connections(self, conn: Any) -> ConnectionUse:
        [row] = self._rows(conn, CONNECTIONS, {"hidden": HIDDEN_QUERY}, named=True).dicts()
        return ConnectionUse(**row)

    def fleet(self, conn: Any, application_prefix: str) -> FleetUse:
        params = {"prefix": application_prefix, "listen": self.listen_statement}
        [row] = self._rows(conn, FLEET, params, named=True).dicts()
        return FleetUse(**row)

    def oldest_waiting(self, conn: Any) -> list[WaitingQueue]:
        """Each queue's oldest due job, longest waiting first."""
        found = self._rows(conn, OLDEST_WAITING, {"groups": LAG_GROUPS}, named=True).dicts()
        return [WaitingQueue(**row) for row in found]

    def stale_running(self, conn: Any, default_rescue_after: float) -> tuple[list[StaleJob], int]:
        """(running jobs without a fresh heartbeat, stalest first and at most
        ROWS_LIMIT, how many there are)."""
        params = {"default": default_rescue_after, "limit": ROWS_LIMIT}
        found = self._rows(conn, STALE_RUNNING, params, named=True).dicts()
        total = int(found[0]["total"]) if found else 0
        return [StaleJob(**_without(row, "total")) for row in found], total

    def notifications(self, conn: Any) -> tuple[str | None, float]:
        """(the wake-up trigger's `tgenabled`, None when it is missing; the share of the
        server's notification queue in use)."""
        params = {"jobs_table": self.sql.live.as_string()}
        [(state, usage)] = self._rows(conn, NOTIFICATIONS, params)
        return state, float(usage)


def _without(row: dict[str, Any], column: str) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != column}
