"""The worker's maintenance statements: rescue, retention, the registry, the gauges,
and LISTEN/NOTIFY.

Maintenance runs on the maintenance leader alone (worker/registry.py elects it); the
locks inside RESCUE and around retention only keep a pass idempotent should two workers
both think they lead for a beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg import sql as psql

from pgjobs.data.connector import rows, run
from pgjobs.data.group import StatementGroup
from pgjobs.data.sql import SchemaSQL, fill
from pgjobs.data.steps import Atomic, Plan, Statement
from pgjobs.types import WorkerRegistration

T = TypeVar("T")

# Returns running jobs whose worker stopped heart-beating. A job whose attempt may have
# begun (readied: `began_at` set by the claim, or listed in its worker's
# `ready_jobs`; a worker's threads start no other) lost that attempt: back to
# `available` (or `failed` when it has no attempt left) with a "worker lost" entry in
# `errors`. A job that only waited, claimed, in the lost worker's buffer never ran: it
# goes back with its attempt given back, its place in line kept, and nothing in `errors`.
# The maintenance leader runs it; the transaction-scoped advisory lock is a guard, so
# that two workers that both think they lead for a beat do not rescue in parallel. A
# workflow step that fails for good here settles its dependents in this statement
# (migration 0009's settle_steps), and `App.result` waiters are woken.
RESCUE = """
WITH leader AS (
    SELECT pg_try_advisory_xact_lock(hashtext(%(lock_name)s)) AS held
), stale AS (
    SELECT j.id, j.began_at IS NOT NULL OR j.id <@ w.ready_jobs IS TRUE AS began
    FROM {live} AS j
    LEFT JOIN {workers} AS w ON w.id = j.worker_id
    WHERE j.state = 'running'
      AND j.heartbeat_at < now() - make_interval(secs => %(rescue_after)s)
      AND (SELECT held FROM leader)
    FOR UPDATE OF j SKIP LOCKED
), rescued AS (
    UPDATE {live} AS j
    SET state = CASE WHEN stale.began AND j.attempts >= j.max_attempts
                     THEN 'failed' ELSE 'available' END,
        attempts = CASE WHEN stale.began THEN j.attempts ELSE j.attempts - 1 END,
        run_at = CASE WHEN stale.began THEN now() ELSE j.run_at END,
        finished_at = CASE WHEN stale.began AND j.attempts >= j.max_attempts THEN now() END,
        errors = CASE WHEN NOT stale.began THEN j.errors
                 ELSE j.errors || jsonb_build_array(jsonb_build_object(
                    'attempt', j.attempts, 'at', now(), 'worker', j.worker_id,
                    'error', 'worker lost: ' || coalesce(j.worker_id, 'unknown')
                             || ' sent no heartbeat for ' || %(rescue_after)s || 's',
                    'traceback', NULL)) END,
        worker_id = NULL,
        heartbeat_at = NULL
    FROM stale
    WHERE j.id = stale.id
    RETURNING j.id, j.queue, j.state, j.workflow_id, stale.began
)
SELECT id, state, began, pg_notify(%(channel)s, queue),
       (SELECT {settle_steps}(array_agg(id), array_agg(state))
        FROM rescued WHERE workflow_id IS NOT NULL AND state = 'failed') AS released,
       (SELECT pg_notify(%(results_channel)s, '')
        FROM rescued WHERE state = 'failed' LIMIT 1) AS woken
FROM rescued
"""

# Deletes one batch of plain jobs (workflows' steps go by PRUNE_STEPS), so a large
# prune is many short transactions rather than one long lock. `pgjobs prune` drops the
# history's partitions wholly past the cutoff (pgjobs/history.py), then deletes the rest
# here from `{table}`, the history or the live table (finished rows not moved yet). The
# literal state list lets the planner use jobs_live's partial jobs_finished_idx and
# leave out the history's partitions of other states.
PRUNE_FINISHED = """
WITH batch AS (
    SELECT id FROM {table}
    WHERE state IN ('completed', 'failed', 'cancelled')
      AND state = ANY(%(states)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
      AND workflow_id IS NULL
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {table} AS j
USING batch
WHERE j.id = batch.id
"""

# Workflows' steps past their retention, kept while any step of their workflow is
# unfinished: a step released later reads its dependencies' results, and a retried one
# waits for them. A batch looks at the next `batch_size` such steps after `after` (by
# finished_at, then id: a cursor through the pass, so the steps kept never hide the ones
# behind them), asks once per workflow whether it is finished (a lookup by the partial
# jobs_workflow_step_idx that stops at the first unfinished step: LIMIT 1 keeps the
# planner from hashing every unfinished job of the table instead), and deletes the
# steps of finished ones. It returns how many steps it looked at and deleted, the
# cursor, and the workflows it deleted steps of. The rows are checked again as they are
# locked: one retried meanwhile is left.
PRUNE_STEPS = """
WITH candidates AS MATERIALIZED (
    SELECT id, workflow_id, finished_at FROM {table}
    WHERE state IN ('completed', 'failed', 'cancelled')
      AND state = ANY(%(states)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
      AND workflow_id IS NOT NULL
      AND finished_at >= %(after_at)s::timestamptz
      AND (finished_at, id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
    ORDER BY finished_at, id
    LIMIT %(batch_size)s
), workflows AS MATERIALIZED (
    SELECT DISTINCT workflow_id FROM candidates
), finished AS (
    SELECT w.workflow_id FROM workflows AS w
    LEFT JOIN LATERAL (
        SELECT true AS found FROM {live} AS s
        WHERE s.workflow_id = w.workflow_id AND s.state IN ('available', 'running', 'blocked')
        LIMIT 1
    ) AS unfinished ON true
    WHERE unfinished.found IS NULL
), batch AS (
    SELECT j.id FROM {table} AS j
    WHERE j.id IN (SELECT id FROM candidates
                   WHERE workflow_id IN (SELECT workflow_id FROM finished))
      AND j.state IN ('completed', 'failed', 'cancelled')
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM {table} AS j
    USING batch
    WHERE j.id = batch.id
    RETURNING j.workflow_id
), last AS (
    SELECT finished_at, id FROM candidates ORDER BY finished_at DESC, id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM candidates), (SELECT count(*) FROM deleted),
       (SELECT finished_at FROM last), (SELECT id FROM last),
       ARRAY(SELECT DISTINCT workflow_id FROM deleted)
"""
# The workflows whose last steps were just deleted: their rows go too. A separate
# statement, run only when steps were deleted, so a role may prune plain jobs without
# a grant on the workflows table.
DELETE_EMPTY_WORKFLOWS = """
DELETE FROM {workflows} AS w
WHERE w.id = ANY(%(ids)s::bigint[])
  AND NOT EXISTS (SELECT FROM {jobs} AS j WHERE j.workflow_id = w.id)
"""


class PrunedSteps(NamedTuple):
    """One batch of PRUNE_STEPS: steps looked at and deleted, and where the next
    batch starts."""

    scanned: int
    deleted: int
    after: tuple[datetime, int]


class PruneCursor(NamedTuple):
    """Where a prune pass is: in which of PRUNED_TABLES, deleting plain jobs, then
    (`steps`) workflows' steps finished after `after` (finished_at, id)."""

    table: int = 0
    steps: bool = False
    after: tuple[datetime, int] = (datetime(1, 1, 1, tzinfo=timezone.utc), 0)


PRUNE_START = PruneCursor()
# The history first (where nearly all finished jobs are), then the live table.
PRUNED_TABLES = ("{history}", "{live}")
PRUNE_FINISHED_IN = [fill(PRUNE_FINISHED, table=table) for table in PRUNED_TABLES]
PRUNE_STEPS_IN = [fill(PRUNE_STEPS, table=table) for table in PRUNED_TABLES]


# A guard around retention's pass on the leader (a session lock, released at the end of
# the pass or when the connection drops with its worker): two workers that both lead
# for a beat do not prune side by side.
TRY_MAINTENANCE_LOCK = "SELECT pg_try_advisory_lock(hashtext(%(lock_name)s))"
RELEASE_MAINTENANCE_LOCK = "SELECT pg_advisory_unlock(hashtext(%(lock_name)s))"


# A worker's row, inserted at start and refreshed with every beat. It also says what this
# worker leads: the fleet's upkeep (`maintenance`: rescue, forgetting lost workers, the
# queue gauges) when it is the longest-running worker not lost (silent for less than its
# own rescue_after), and each of its `duties` (periodic, retention) when no
# longer-running live worker has that duty too. The subquery reads the rows as they were
# before this statement, so two workers can both think they lead for one beat; what a
# leader does is guarded (RESCUE's lock, retention's lock, a tick's row lock).
REGISTER_WORKER = """
WITH me AS (
    INSERT INTO {workers} AS w
        (id, host, pid, queues, concurrency, version, rescue_after, duties)
    VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(version)s,
            %(rescue_after)s, %(duties)s)
    ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now()
    RETURNING w.id, w.started_at, w.duties
)
SELECT ARRAY(
    SELECT duty FROM unnest('{{maintenance}}'::text[] || me.duties) AS duty
    WHERE NOT EXISTS (
        SELECT FROM {workers} AS other
        WHERE other.id <> me.id
          AND other.last_heartbeat_at > now() - make_interval(secs => other.rescue_after)
          AND (other.started_at, other.id) < (me.started_at, me.id)
          AND (duty = 'maintenance' OR duty = ANY(other.duties))
    )
) AS leads
FROM me
"""

DEREGISTER_WORKER = "DELETE FROM {workers} WHERE id = %(id)s"

# Rows of workers lost (silent past their rescue_after) for longer than `keep_lost`:
# until then `pgjobs workers` lists them as recently lost.
FORGET_LOST_WORKERS = """
DELETE FROM {workers}
WHERE last_heartbeat_at < now() - make_interval(secs => rescue_after + %(keep_lost)s)
RETURNING id
"""

# The queue gauges, sampled by the maintenance leader: jobs runnable now and the oldest
# one's wait, per queue, from the partial fetch index alone.
QUEUE_DEPTHS = """
SELECT queue, count(*), extract(epoch FROM now() - min(run_at))::float8
FROM {live}
WHERE state = 'available' AND run_at <= now()
GROUP BY queue
"""

# A notification on the schema's channel, sent when the transaction commits.
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"
# Who the server thinks its client is, to tell a direct connection from a pooled one.
CLIENT_ENDPOINT = "SELECT host(inet_client_addr()), inet_client_port(), pg_backend_pid()"


class MaintenanceStatements(StatementGroup):
    """The worker's maintenance statements for one schema, on a given connection."""

    def __init__(self, sql: SchemaSQL) -> None:
        super().__init__(sql)
        listen = psql.SQL("LISTEN {}; LISTEN {}").format(
            psql.Identifier(sql.channel), psql.Identifier(sql.control_channel)
        )
        self.listen_statement = psql.SQL(listen.as_string())

    def rescue(self, conn: Any, *, rescue_after: float) -> list[tuple[int, str, bool]]:
        """Put back (or fail) jobs of workers silent for `rescue_after` s: (id, new state,
        whether its attempt had begun)."""
        params = {
            "rescue_after": rescue_after,
            "lock_name": f"pgjobs.rescue:{self.schema}",
            "channel": self.sql.channel,
            "results_channel": self.sql.results_channel,
        }
        return [(row[0], row[1], row[2]) for row in self._rows(conn, RESCUE, params)]

    def prune_batch(
        self,
        conn: Any,
        *,
        states: Sequence[str],
        older_than_seconds: float,
        batch_size: int,
        table: int = 0,
    ) -> int:
        """Delete up to `batch_size` plain jobs finished in `states` long enough ago; how
        many (workflows' steps: `prune_steps`)."""
        params = {
            "states": list(states),
            "older_than": older_than_seconds,
            "batch_size": batch_size,
        }
        return int(self._rows(conn, PRUNE_FINISHED_IN[table], params).rowcount)

    def prune_steps(
        self,
        conn: Any,
        *,
        states: Sequence[str],
        older_than_seconds: float,
        batch_size: int,
        after: tuple[datetime, int] = PRUNE_START.after,
        table: int = 0,
    ) -> PrunedSteps:
        """Delete the steps of finished workflows among the next `batch_size` steps
        finished in `states` long enough ago, after `after`, and the workflows left
        with no step, in one transaction. A pass continues at each batch's `after`
        until a batch looks at fewer than `batch_size` steps."""
        params = {
            "states": list(states),
            "older_than": older_than_seconds,
            "batch_size": batch_size,
            "after_at": after[0],
            "after_id": after[1],
        }
        return run(conn, self.schema, _atomic(self._prune_steps(params, after, table)))

    def _prune_steps(
        self, params: dict[str, Any], after: tuple[datetime, int], table: int
    ) -> Plan[PrunedSteps]:
        [(scanned, deleted, last_at, last_id, emptied)] = yield Statement(
            self.sql.render(PRUNE_STEPS_IN[table]), params
        )
        if emptied:
            yield Statement(self.sql.render(DELETE_EMPTY_WORKFLOWS), {"ids": emptied})
        if last_at is not None:
            after = (last_at, last_id)
        return PrunedSteps(int(scanned), int(deleted), after)

    def prune_next(
        self,
        conn: Any,
        *,
        states: Sequence[str],
        older_than_seconds: float,
        batch_size: int,
        cursor: PruneCursor = PRUNE_START,
    ) -> tuple[int, PruneCursor | None]:
        """One batch of a prune pass (`pgjobs prune`, retention) from `cursor`: plain
        jobs until they are done, then workflows' steps. Jobs deleted, and where the
        next batch starts (None: the pass is over)."""
        if not cursor.steps:
            deleted = self.prune_batch(
                conn,
                states=states,
                older_than_seconds=older_than_seconds,
                batch_size=batch_size,
                table=cursor.table,
            )
            return deleted, cursor if deleted >= batch_size else cursor._replace(steps=True)
        pruned = self.prune_steps(
            conn,
            states=states,
            older_than_seconds=older_than_seconds,
            batch_size=batch_size,
            after=cursor.after,
            table=cursor.table,
        )
        if pruned.scanned >= batch_size:
            return pruned.deleted, cursor._replace(after=pruned.after)
        following = cursor.table + 1
        return pruned.deleted, PruneCursor(following) if following < len(PRUNED_TABLES) else None

    def try_maintenance_lock(self, conn: Any, name: str) -> bool:
        """Take the session lock of maintenance task `name` if no other worker holds it."""
        params = {"lock_name": f"pgjobs.{name}:{self.schema}"}
        [(held,)] = self._rows(conn, TRY_MAINTENANCE_LOCK, params)
        return bool(held)

    def release_maintenance_lock(self, conn: Any, name: str) -> None:
        """Release the lock that `try_maintenance_lock` took."""
        self._rows(conn, RELEASE_MAINTENANCE_LOCK, {"lock_name": f"pgjobs.{name}:{self.schema}"})

    def register_worker(self, conn: Any, registration: WorkerRegistration) -> set[str]:
        """Insert or refresh this worker's row; what it leads (`maintenance`, and those
        of its duties no longer-running live worker has)."""
        [(leads,)] = self._rows(conn, REGISTER_WORKER, registration.as_params())
        return set(leads)

    def deregister_worker(self, conn: Any, worker_id: str) -> None:
        """Delete a worker's row (its clean exit)."""
        self._rows(conn, DEREGISTER_WORKER, {"id": worker_id})

    def forget_lost_workers(self, conn: Any, *, keep_lost: float) -> list[str]:
        """Delete the rows of workers lost more than `keep_lost` seconds ago; their ids."""
        return [row[0] for row in self._rows(conn, FORGET_LOST_WORKERS, {"keep_lost": keep_lost})]

    def queue_depths(self, conn: Any) -> list[tuple[str, int, float]]:
        """(queue, jobs runnable now, seconds the oldest of them has waited) per queue."""
        return [
            (queue, int(count), float(oldest))
            for queue, count, oldest in self._rows(conn, QUEUE_DEPTHS)
        ]

    def listen(self, conn: Any) -> None:
        """LISTEN on the schema's jobs and control channels (the connection must be in
        autocommit)."""
        rows(conn, self.schema, Statement(self.listen_statement))

    def notify(self, conn: Any, payload: str) -> None:
        """NOTIFY the schema's channel with `payload` when `conn`'s transaction commits."""
        self._rows(conn, NOTIFY, {"channel": self.sql.channel, "payload": payload})


def _atomic(plan: Plan[T]) -> Plan[T]:
    """`plan` as one transaction (a savepoint inside the caller's)."""
    result: T = yield Atomic(plan)
    return result


def client_endpoint(conn: psycopg.Connection[Any]) -> tuple[str | None, int | None, int]:
    """(address, port, backend pid) of this session's client as the server sees it; the
    address and port are None over a Unix socket."""
    # Schema-free: no table of pgjobs' is read, so no schema to report missing.
    [(address, port, pid)] = rows(conn, "", Statement(psql.SQL(CLIENT_ENDPOINT)))
    return address, port, pid
