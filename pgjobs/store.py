"""The data-access layer: the only module that runs pgjobs' SQL.

Every statement lives in `queries.py`; this module shapes its parameters, runs it on the
connection it is given and turns the rows into typed values. Callers decide which
connection and which transaction: the producer's own, a pooled one, or one of the
worker's dedicated connections. A caller's connection may be psycopg or SQLAlchemy;
`_rows` hides the difference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq, sql
from psycopg.rows import dict_row, tuple_row

from pgjobs.errors import PgJobsError, SchemaNotMigratedError
from pgjobs.job import STATES, Job, JobState
from pgjobs.queries import STAGING_TYPES, Queries
from pgjobs.reused_cursor import reused_cursor

if TYPE_CHECKING:
    from pgjobs.enqueue import JobRow
    from pgjobs.fleet import RegisteredWorker, WorkerRegistration
    from pgjobs.worker.jobs import ClaimedJob, Outcome

Params = Mapping[str, Any]
# What a statement takes: named parameters, or positional ones (ENQUEUE_ONE's).
AnyParams = Params | Sequence[Any]

# From this many rows on, `insert_jobs` COPYs the batch instead of sending it as arrays
# (measured: the two break even between 100 and 250 rows; at 1,000 COPY takes half the
# time). Below it, creating the temporary table costs more than it saves.
COPY_THRESHOLD = 200


@dataclass(frozen=True)
class QueueStats:
    """One queue's jobs by state, its oldest overdue waiting job and its recent throughput.

    `oldest_waiting` is how long the longest-waiting available job has been runnable
    (None when nothing is waiting); the `finished_*` counts are jobs a worker completed or
    failed in the last one and five minutes.
    """

    queue: str
    counts: dict[JobState, int]
    oldest_waiting: timedelta | None
    finished_last_minute: int
    finished_last_5_minutes: int

    @property
    def total(self) -> int:
        """Jobs of this queue in any state."""
        return sum(self.counts.values())

    @classmethod
    def from_row(cls, row: Mapping[str, Any], queue: str) -> QueueStats:
        """From a row of QUEUE_STATS; its NULLs (a queue with settings and no jobs) are 0."""
        return cls(
            queue=queue,
            counts={state: row[state.value] or 0 for state in STATES},
            oldest_waiting=row["oldest_waiting"],
            finished_last_minute=row["finished_last_minute"] or 0,
            finished_last_5_minutes=row["finished_last_5_minutes"] or 0,
        )


@dataclass(frozen=True)
class QueueOverview:
    """A queue's statistics and its settings: paused, and its waiting-jobs limit."""

    stats: QueueStats
    paused: bool
    max_waiting: int | None


@dataclass(frozen=True)
class ScheduleState:
    """A row of `<schema>.schedules`: a periodic task's state as workers left it.

    Ticks up to `done_until` are dealt with (enqueued, skipped as too late, or passed
    before the schedule was seen); `last_tick` is the newest one that enqueued a job.
    """

    name: str
    expression: str
    timezone: str
    done_until: datetime
    last_tick: datetime | None
    last_job_id: int | None
    updated_at: datetime


class Store:
    """pgjobs' statements for one schema, as typed calls on a given connection."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.queries = Queries(schema)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema."""
        return self.queries.channel

    # --- producers -------------------------------------------------------------------

    def insert_jobs(self, conn: Any, rows: Sequence[JobRow]) -> list[tuple[int, str | None]]:
        """Insert `rows` in one statement; (id, unique_key) of the rows actually inserted.

        Rows whose unique_key an unfinished job holds are skipped (ON CONFLICT DO
        NOTHING). Ids come from the identity sequence in input order.
        """
        if len(rows) >= COPY_THRESHOLD:
            with self._reporting_missing_schema():
                return self._insert_by_copy(conn, rows)
        # Fewer rows than COPY_THRESHOLD: a result small enough for the kept cursor.
        inserted = self._rows(conn, *self._insert_statement(rows), reuse_cursor=True)
        return [(r[0], r[1]) for r in inserted]

    def _insert_by_copy(self, conn: Any, rows: Sequence[JobRow]) -> list[tuple[int, str | None]]:
        """`insert_jobs` for a large batch: COPY into a temporary table, INSERT from it.

        The statements share one transaction: the caller's, or for an autocommit psycopg
        connection one of their own (committed at once, as autocommit would have).
        """
        raw = caller_psycopg_connection(conn)
        with raw.transaction() if raw.autocommit else nullcontext():
            _run_on(conn, self.queries.create_staging, {})
            with raw.cursor() as cur, cur.copy(self.queries.copy_to_staging) as copy:
                copy.set_types(STAGING_TYPES)
                for values in _staging_rows(rows):
                    copy.write_row(values)
            inserted = _run_on(conn, self.queries.enqueue_staged(unique=_any_key(rows)), {})
            _run_on(conn, self.queries.drop_staging, {})
        return [(job_id, key) for job_id, key in inserted]

    def copy_plain_jobs(self, conn: Any, count: int, rows: Iterable[JobRow]) -> list[int]:
        """Insert `count` plain rows (no unique_key, run_at or delay) by one COPY straight
        into the jobs table, each row sent as `rows` yields it; returns their ids in order.

        `rows` may raise (a row that fails validation): the COPY is then abandoned and
        nothing is written, and the caller's transaction stays usable, since the COPY runs
        in a savepoint (its own transaction on an autocommit connection).
        """
        raw = caller_psycopg_connection(conn)
        with self._reporting_missing_schema():
            [(ids,)] = _run_on(conn, self.queries.reserve_job_ids, {"count": count})
            with raw.transaction(), raw.cursor() as cur, cur.copy(self.queries.copy_jobs) as copy:
                for values in _plain_job_rows(ids, rows):
                    copy.write_row(values)
        return list(ids)

    def unique_key_holders(self, conn: Any, keys: Sequence[str]) -> dict[str, int]:
        """{unique_key: id} of the unfinished jobs holding any of `keys`."""
        rows = self._rows(conn, *self._holders_statement(keys))
        return {key: job_id for key, job_id in rows}

    def _holders_statement(self, keys: Sequence[str]) -> tuple[sql.SQL, Params]:
        return self.queries.unique_key_holders, {"unique_keys": list(keys)}

    def _insert_statement(self, rows: Sequence[JobRow]) -> tuple[sql.SQL, AnyParams]:
        """The INSERT of `rows` and its parameters, for the sync and the async callers."""
        if len(rows) == 1:
            [row] = rows  # ENQUEUE_ONE's placeholders follow JobRow's fields
            return self.queries.enqueue_one(unique=row.unique_key is not None), row
        params = {
            "queues": [r.queue for r in rows],
            "tasks": [r.task for r in rows],
            "payloads": [r.payload_json for r in rows],
            "priorities": [r.priority for r in rows],
            "run_ats": [r.run_at for r in rows],
            "delays": [r.delay_seconds for r in rows],
            "max_attempts": [r.max_attempts for r in rows],
            "unique_keys": [r.unique_key for r in rows],
        }
        return self.queries.enqueue(unique=_any_key(rows)), params

    # --- asyncio producers: the same statements, awaited ---------------------------------

    async def insert_jobs_async(
        self, conn: Any, rows: Sequence[JobRow]
    ) -> list[tuple[int, str | None]]:
        """`insert_jobs` on a psycopg AsyncConnection or a SQLAlchemy AsyncConnection or
        AsyncSession, in its transaction."""
        if len(rows) >= COPY_THRESHOLD:
            with self._reporting_missing_schema():
                return await self._insert_by_copy_async(conn, rows)
        statement = self._insert_statement(rows)
        inserted = await self._rows_async(conn, *statement, reuse_cursor=True)
        return [(r[0], r[1]) for r in inserted]

    async def _insert_by_copy_async(
        self, conn: Any, rows: Sequence[JobRow]
    ) -> list[tuple[int, str | None]]:
        """`_insert_by_copy` on an async connection."""
        raw = await _caller_async_psycopg_connection(conn)
        async with raw.transaction() if raw.autocommit else nullcontext():
            await _run_on_async(conn, self.queries.create_staging, {})
            async with raw.cursor() as cur, cur.copy(self.queries.copy_to_staging) as copy:
                copy.set_types(STAGING_TYPES)
                for values in _staging_rows(rows):
                    await copy.write_row(values)
            staged = self.queries.enqueue_staged(unique=_any_key(rows))
            inserted = await _run_on_async(conn, staged, {})
            await _run_on_async(conn, self.queries.drop_staging, {})
        return [(job_id, key) for job_id, key in inserted]

    async def copy_plain_jobs_async(
        self, conn: Any, count: int, rows: Iterable[JobRow]
    ) -> list[int]:
        """`copy_plain_jobs` on an async connection: rows stream as they are validated."""
        raw = await _caller_async_psycopg_connection(conn)
        with self._reporting_missing_schema():
            [(ids,)] = await _run_on_async(conn, self.queries.reserve_job_ids, {"count": count})
            copy_jobs = self.queries.copy_jobs
            async with raw.transaction(), raw.cursor() as cur, cur.copy(copy_jobs) as copy:
                for values in _plain_job_rows(ids, rows):
                    await copy.write_row(values)
        return list(ids)

    async def unique_key_holders_async(self, conn: Any, keys: Sequence[str]) -> dict[str, int]:
        """`unique_key_holders` on an async connection."""
        rows = await self._rows_async(conn, *self._holders_statement(keys))
        return {key: job_id for key, job_id in rows}

    async def queue_limits_async(self, conn: Any) -> dict[str, int]:
        """`queue_limits` on an async connection."""
        return dict(await self._rows_async(conn, self.queries.queue_limits, {}))

    async def count_waiting_async(self, conn: Any, queue: str, *, up_to: int) -> int:
        """`count_waiting` on an async connection."""
        params = {"queue": queue, "up_to": up_to}
        [(count,)] = await self._rows_async(
            conn, self.queries.count_waiting, params, reuse_cursor=True
        )
        return int(count)

    async def _rows_async(
        self, conn: Any, query: sql.SQL, params: AnyParams, *, reuse_cursor: bool = False
    ) -> list[tuple[Any, ...]]:
        with self._reporting_missing_schema():
            return await _run_on_async(conn, query, params, reuse_cursor=reuse_cursor)

    # --- the worker -------------------------------------------------------------------

    def claim(
        self,
        conn: psycopg.Connection[Any],
        *,
        limit: int,
        queue: str | None,
        worker_id: str,
        begin: int = 0,
        async_commit: bool = False,
    ) -> tuple[list[ClaimedJob], set[int]]:
        """Claim up to `limit` runnable jobs (of `queue`, or of any queue when None), the
        first `begin` of them ready for threads (CLAIM); `async_commit`: without waiting
        for the claim's WAL to reach the disk. Returns the jobs and the ids readied."""
        from pgjobs.worker.jobs import ClaimedJob

        query = self.queries.claim(any_queue=queue is None, async_commit=async_commit)
        params = {"limit": limit, "worker_id": worker_id, "queue": queue, "begin": begin}
        rows = conn.execute(query, params, binary=True).fetchall()
        return [ClaimedJob.from_row(row[:-1]) for row in rows], {row[0] for row in rows if row[-1]}

    def record_outcomes(
        self, conn: psycopg.Connection[Any], outcomes: Sequence[Outcome], *, worker_id: str
    ) -> set[int]:
        """Write finished attempts; the ids whose outcome was applied.

        An outcome is dropped when its job is no longer this attempt, running, and ours
        (it was cancelled or rescued meanwhile).
        """
        applied: set[int] = set()
        for query, params in self.outcome_statements(outcomes, worker_id=worker_id):
            applied.update(row[0] for row in conn.execute(query, params))
        return applied

    def outcome_statements(
        self, outcomes: Sequence[Outcome], *, worker_id: str
    ) -> list[tuple[sql.SQL, Params]]:
        """The statements that write `outcomes`: successes take the cheaper
        COMPLETE_JOBS, every other outcome RECORD_OUTCOMES."""
        successes = [o for o in outcomes if o.state == "completed"]
        others = [o for o in outcomes if o.state != "completed"] if successes else outcomes
        statements: list[tuple[sql.SQL, Params]] = []
        if successes:
            completions = {
                "ids": int_array([o.job_id for o in successes]),
                "attempts": int_array([o.attempt for o in successes]),
                "worker_id": worker_id,
            }
            statements.append((self.queries.complete_jobs, completions))
        if others:
            params = {
                "ids": [o.job_id for o in others],
                "attempts": [o.attempt for o in others],
                "states": [o.state for o in others],
                "delays": [o.delay for o in others],
                "errors": [o.error_json for o in others],
                "attempts_deltas": [o.attempts_delta for o in others],
                "max_attempts_deltas": [o.max_attempts_delta for o in others],
                "worker_id": worker_id,
                "channel": self.channel,
            }
            statements.append((self.queries.record_outcomes, params))
        return statements

    def ready_jobs(
        self, conn: psycopg.Connection[Any], job_ids: Collection[int], *, worker_id: str
    ) -> None:
        """Record `job_ids` as every job this worker readied and has not settled
        (READY_JOBS); row by row when the worker has no row to record them in."""
        ids = sorted(job_ids)
        params = {"ranges": id_ranges(ids), "worker_id": worker_id}
        if conn.execute(self.queries.ready_jobs, params).fetchone() is None:
            params = {"ids": int_array(ids), "worker_id": worker_id}
            conn.execute(self.queries.ready_job_rows, params)

    def heartbeat(
        self, conn: psycopg.Connection[Any], ids: Sequence[int], *, worker_id: str
    ) -> set[int]:
        """Refresh `heartbeat_at` of the jobs still ours; returns their ids."""
        params = {"ids": int_array(ids), "worker_id": worker_id}
        return {row[0] for row in conn.execute(self.queries.heartbeat, params)}

    def rescue(
        self, conn: psycopg.Connection[Any], *, rescue_after: float
    ) -> list[tuple[int, str, bool]]:
        """Put back (or fail) jobs of workers silent for `rescue_after` s: (id, new state,
        whether its attempt had begun)."""
        params = {
            "rescue_after": rescue_after,
            "lock_name": f"pgjobs.rescue:{self.schema}",
            "channel": self.channel,
        }
        return [(row[0], row[1], row[2]) for row in conn.execute(self.queries.rescue, params)]

    def listen(self, conn: psycopg.Connection[Any]) -> None:
        """LISTEN on the schema's channel (the connection must be in autocommit)."""
        conn.execute(self.queries.listen)

    # --- behind a pooler: the worker's notification check -------------------------------

    def notify(self, conn: psycopg.Connection[Any], payload: str) -> None:
        """NOTIFY the schema's channel with `payload` when `conn`'s transaction commits."""
        conn.execute(self.queries.notify, {"channel": self.channel, "payload": payload})

    # --- inspection and administration ---------------------------------------------------

    def schema_revision(self, conn: psycopg.Connection[Any]) -> tuple[bool, str | None]:
        """(whether `pgjobs migrate` created this schema's jobs table, its Alembic
        revision); the revision is None when this role may not read it."""
        params = {
            "jobs_table": self.queries.jobs_table_name,
            "version_table": self.queries.version_table.as_string(),
        }
        [(migrated, readable)] = self._rows(conn, self.queries.schema_state, params)
        if not (migrated and readable):
            return bool(migrated), None
        rows = self._rows(conn, self.queries.schema_revision, {})
        return True, (rows[0][0] if rows else None)

    def queue_stats(self, conn: psycopg.Connection[Any]) -> list[QueueStats]:
        """Statistics of every queue that has jobs, by queue name, in one pass."""
        return [
            QueueStats.from_row(row, row["queue"])
            for row in self._dict_rows(conn, self.queries.queue_stats, {})
        ]

    def list_jobs(
        self,
        conn: psycopg.Connection[Any],
        *,
        states: Sequence[str] | None,
        queues: Sequence[str] | None,
        tasks: Sequence[str] | None,
        limit: int,
    ) -> list[Job]:
        """The newest `limit` jobs matching every filter given (None matches all)."""
        params = {"states": states, "queues": queues, "tasks": tasks, "limit": limit}
        return [Job.from_row(row) for row in self._dict_rows(conn, self.queries.list_jobs, params)]

    def get_job(self, conn: psycopg.Connection[Any], job_id: int) -> Job | None:
        """One job, or None."""
        rows = self._dict_rows(conn, self.queries.get_job, {"id": job_id})
        return Job.from_row(rows[0]) if rows else None

    def lock_jobs(
        self, conn: psycopg.Connection[Any], ids: Sequence[int]
    ) -> dict[int, tuple[JobState, str | None]]:
        """Lock jobs (in id order) for a change: {id: (state, unique_key)} of those found."""
        rows = self._rows(conn, self.queries.lock_jobs_for_change, {"ids": list(ids)})
        return {job_id: (JobState(state), key) for job_id, state, key in rows}

    def retry_jobs(self, conn: psycopg.Connection[Any], ids: Sequence[int]) -> set[int]:
        """Make failed or cancelled jobs available now and wake workers; the ids changed."""
        params = {"ids": list(ids), "channel": self.channel}
        return {row[0] for row in self._rows(conn, self.queries.retry_jobs, params)}

    def cancel_jobs(self, conn: psycopg.Connection[Any], ids: Sequence[int]) -> set[int]:
        """Cancel waiting or running jobs (locked by the caller); the ids changed.

        The workers holding the running ones are told on the control channel.
        """
        params = {"ids": list(ids), "control_channel": self.queries.control_channel}
        return {row[0] for row in self._rows(conn, self.queries.cancel_jobs, params)}

    def prune_batch(
        self,
        conn: psycopg.Connection[Any],
        *,
        states: Sequence[str],
        older_than_seconds: float,
        batch_size: int,
    ) -> int:
        """Delete up to `batch_size` jobs finished in `states` long enough ago; how many."""
        params = {
            "states": list(states),
            "older_than": older_than_seconds,
            "batch_size": batch_size,
        }
        return conn.execute(self.queries.prune_finished, params).rowcount

    def delete_queue(self, conn: psycopg.Connection[Any], queue: str) -> int:
        """Delete every job of `queue`, whatever its state; how many."""
        return conn.execute(self.queries.delete_queue_jobs, {"queue": queue}).rowcount

    # --- queue control: pause, limits, bulk changes, retention ----------------------

    def pause_queue(self, conn: psycopg.Connection[Any], queue: str) -> None:
        """Pause `queue` (workers skip it from their next claim)."""
        self._rows(conn, self.queries.pause_queue, {"queue": queue})

    def resume_queue(self, conn: psycopg.Connection[Any], queue: str) -> bool:
        """Resume `queue` and wake the workers that serve it; False, changing nothing, when
        it was not paused."""
        params = {"queue": queue, "channel": self.channel}
        return bool(self._rows(conn, self.queries.resume_queue, params))

    def set_queue_limit(
        self, conn: psycopg.Connection[Any], queue: str, max_waiting: int | None
    ) -> None:
        """Set (or with None remove) the waiting-jobs limit of `queue`."""
        params = {"queue": queue, "max_waiting": max_waiting}
        self._rows(conn, self.queries.set_queue_limit, params)

    def queue_limits(self, conn: Any) -> dict[str, int]:
        """{queue: max_waiting} of every queue that has a limit."""
        return dict(self._rows(conn, self.queries.queue_limits, {}))

    def count_waiting(self, conn: Any, queue: str, *, up_to: int) -> int:
        """Waiting (available) jobs of `queue`, counted up to `up_to` at most."""
        params = {"queue": queue, "up_to": up_to}
        [(count,)] = self._rows(conn, self.queries.count_waiting, params, reuse_cursor=True)
        return int(count)

    def queue_overview(self, conn: psycopg.Connection[Any]) -> list[QueueOverview]:
        """Every queue that has jobs or settings, by name, with both."""
        return [
            QueueOverview(QueueStats.from_row(row, row["name"]), row["paused"], row["max_waiting"])
            for row in self._dict_rows(conn, self.queries.queue_overview, {})
        ]

    def count_matching(self, conn: psycopg.Connection[Any], matching: Params) -> tuple[int, int]:
        """(how many jobs match, the highest matching id) for a bulk change's filter.

        `matching` holds `states`, `queues`, `tasks` (None: any) and `older_than`
        (seconds since enqueue, None: any).
        """
        [(count, last_id)] = self._rows(conn, self.queries.count_matching, matching)
        return int(count), int(last_id)

    def lock_matching(
        self,
        conn: psycopg.Connection[Any],
        matching: Params,
        *,
        after_id: int,
        up_to_id: int,
        batch_size: int,
    ) -> dict[int, tuple[JobState, str | None]]:
        """Lock the next batch of matching jobs after `after_id`, like `lock_jobs`."""
        params = {
            **matching,
            "after_id": after_id,
            "up_to_id": up_to_id,
            "batch_size": batch_size,
        }
        rows = self._rows(conn, self.queries.lock_matching, params)
        return {job_id: (JobState(state), key) for job_id, state, key in rows}

    def try_maintenance_lock(self, conn: psycopg.Connection[Any], name: str) -> bool:
        """Take the session lock of maintenance task `name` if no other worker holds it."""
        params = {"lock_name": f"pgjobs.{name}:{self.schema}"}
        [(held,)] = self._rows(conn, self.queries.try_maintenance_lock, params)
        return bool(held)

    def release_maintenance_lock(self, conn: psycopg.Connection[Any], name: str) -> None:
        """Release the lock that `try_maintenance_lock` took."""
        params = {"lock_name": f"pgjobs.{name}:{self.schema}"}
        conn.execute(self.queries.release_maintenance_lock, params)

    # --- observability: the worker registry and the queue gauges -----------------------

    def register_worker(
        self, conn: psycopg.Connection[Any], registration: WorkerRegistration
    ) -> bool:
        """Insert or refresh this worker's row; True when it is the maintenance leader."""
        [(leader,)] = self._rows(conn, self.queries.register_worker, registration.as_params())
        return bool(leader)

    def deregister_worker(self, conn: psycopg.Connection[Any], worker_id: str) -> None:
        """Delete a worker's row (its clean exit)."""
        self._rows(conn, self.queries.deregister_worker, {"id": worker_id})

    def forget_lost_workers(self, conn: psycopg.Connection[Any], *, keep_lost: float) -> list[str]:
        """Delete the rows of workers lost more than `keep_lost` seconds ago; their ids."""
        rows = self._rows(conn, self.queries.forget_lost_workers, {"keep_lost": keep_lost})
        return [row[0] for row in rows]

    def list_workers(self, conn: psycopg.Connection[Any]) -> list[RegisteredWorker]:
        """Every registered worker with the jobs it holds: live ones first, oldest first."""
        from pgjobs.fleet import RegisteredWorker

        rows = self._dict_rows(conn, self.queries.list_workers, {})
        return [RegisteredWorker.from_row(row) for row in rows]

    def queue_depths(self, conn: psycopg.Connection[Any]) -> list[tuple[str, int, float]]:
        """(queue, jobs runnable now, seconds the oldest of them has waited) per queue."""
        rows = self._rows(conn, self.queries.queue_depths, {})
        return [(queue, int(count), float(oldest)) for queue, count, oldest in rows]

    # --- periodic jobs ----------------------------------------------------------------

    def schedule_states(
        self, conn: psycopg.Connection[Any], names: Sequence[str] | None = None
    ) -> dict[str, ScheduleState]:
        """The stored state of the schedules called `names` (every one when None)."""
        params = {"names": None if names is None else list(names)}
        rows = self._dict_rows(conn, self.queries.schedule_states, params)
        return {row["name"]: ScheduleState(**row) for row in rows}

    def register_schedules(
        self,
        conn: psycopg.Connection[Any],
        schedules: Sequence[tuple[str, str, str]],
        *,
        done_until: datetime,
    ) -> None:
        """Create the rows of schedules given as (name, expression, timezone) that have
        none: no tick up to `done_until` will be enqueued for them."""
        conn.execute(self.queries.register_schedules, _schedule_params(schedules, done_until))

    def reset_schedules(
        self,
        conn: psycopg.Connection[Any],
        schedules: Sequence[tuple[str, str, str]],
        *,
        done_until: datetime,
    ) -> None:
        """Create, or restart after a change, schedules given as (name, expression,
        timezone): no tick up to `done_until` will be enqueued for them."""
        conn.execute(self.queries.reset_schedules, _schedule_params(schedules, done_until))

    def enqueue_tick(
        self,
        conn: psycopg.Connection[Any],
        *,
        schedule: tuple[str, str, str],
        tick: datetime,
        job: JobRow,
        enqueue: bool,
    ) -> tuple[bool, int | None]:
        """Move the schedule (name, expression, timezone) forward to `tick` and insert
        `job` for it (unless `enqueue` is false: the tick is skipped), unless another
        worker got there first; (moved, new job id)."""
        name, expression, timezone = schedule
        params = {
            "name": name,
            "expression": expression,
            "timezone": timezone,
            "tick": tick,
            "enqueue": enqueue,
            "task": job.task,
            "queue": job.queue,
            "payload": job.payload_json,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
        }
        rows = conn.execute(self.queries.enqueue_tick, params).fetchall()
        return (bool(rows), rows[0][0] if rows else None)

    # --- testing: pgjobs.testing -------------------------------------------------------

    def find_jobs(
        self,
        conn: Any,
        *,
        states: Sequence[str] | None,
        queues: Sequence[str] | None,
        tasks: Sequence[str] | None,
        limit: int,
    ) -> list[Job]:
        """`list_jobs` on any caller connection (psycopg or SQLAlchemy), in its
        transaction, so a test sees the jobs it has not committed."""
        params = {"states": states, "queues": queues, "tasks": tasks, "limit": limit}
        rows = self._rows(conn, self.queries.list_jobs, params)
        names = [field.name for field in dataclasses.fields(Job)]  # JOB_COLUMNS' order
        return [Job.from_row(dict(zip(names, row, strict=True))) for row in rows]

    def make_due(
        self, conn: Any, *, until: datetime | None = None, advance: float | None = None
    ) -> list[int]:
        """Move the waiting jobs due by `until` (else now + `advance` seconds, else all of
        them) back in time so that they are due now; their ids."""
        params = {"until": until, "advance": advance}
        return [row[0] for row in self._rows(conn, self.queries.make_due, params)]

    def _dict_rows(
        self, conn: psycopg.Connection[Any], query: sql.SQL, params: Params
    ) -> list[dict[str, Any]]:
        with self._reporting_missing_schema(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def _rows(
        self, conn: Any, query: sql.SQL, params: AnyParams, *, reuse_cursor: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run `query` on a psycopg or SQLAlchemy connection, inside its transaction."""
        with self._reporting_missing_schema():
            return _run_on(conn, query, params, reuse_cursor=reuse_cursor)

    @contextmanager
    def _reporting_missing_schema(self) -> Iterator[None]:
        """Turn "relation does not exist" into the error that says to migrate."""
        try:
            yield
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction) as error:
            raise SchemaNotMigratedError.for_schema(self.schema) from error
        except Exception as error:
            # SQLAlchemy wraps driver errors; unwrap the one case users can fix themselves.
            missing = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction)
            if isinstance(getattr(error, "orig", None), missing):
                raise SchemaNotMigratedError.for_schema(self.schema) from error
            raise


def _schedule_params(schedules: Sequence[tuple[str, str, str]], done_until: datetime) -> Params:
    return {
        "names": [name for name, _, _ in schedules],
        "expressions": [expression for _, expression, _ in schedules],
        "timezones": [zone for _, _, zone in schedules],
        "done_until": done_until,
    }


def _any_key(rows: Sequence[JobRow]) -> bool:
    """Whether any row has a unique_key, so the INSERT needs its ON CONFLICT clause."""
    return any(row.unique_key is not None for row in rows)


def _staging_rows(rows: Sequence[JobRow]) -> Iterator[tuple[Any, ...]]:
    """The rows of the staging table (CREATE_STAGING's columns): each job and its position."""
    for position, row in enumerate(rows):
        yield (*row, position)


def _plain_job_rows(ids: Sequence[int], rows: Iterable[JobRow]) -> Iterator[tuple[Any, ...]]:
    """COPY_JOBS' rows: plain jobs with the ids reserved for them, built as `rows` yields."""
    for job_id, row in zip(ids, rows, strict=True):
        if row.unique_key is not None or row.run_at is not None or row.delay_seconds:
            raise PgJobsError(f"not a plain job for COPY: {row!r}")  # a bug
        yield (job_id, row.queue, row.task, row.payload_json, row.priority, row.max_attempts)


def client_endpoint(conn: psycopg.Connection[Any]) -> tuple[str | None, int | None, int]:
    """(address, port, backend pid) of this session's client as the server sees it; the
    address and port are None over a Unix socket. Schema-free, so not a Store method."""
    from pgjobs.queries import CLIENT_ENDPOINT

    row = conn.execute(CLIENT_ENDPOINT).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def id_ranges(ids: Sequence[int]) -> str:
    """Sorted ids as an int8multirange literal of their runs: `{[1,4),[7,8)}`."""
    runs: list[list[int]] = []
    for job_id in ids:
        if runs and job_id == runs[-1][1]:
            runs[-1][1] = job_id + 1
        else:
            runs.append([job_id, job_id + 1])
    return "{" + ",".join(f"[{low},{high})" for low, high in runs) + "}"


def int_array(values: Sequence[int]) -> str:
    """An integer array parameter as PostgreSQL's array text, e.g. `{1,2,3}`.

    Bound like any parameter and cast in the statement (`::bigint[]`); psycopg's own
    list adaptation is pure Python per element, and the worker sends thousands a second.
    """
    return "{" + ",".join(map(str, values)) + "}"


def _sqlalchemy_connection(conn: Any) -> Any | None:
    """The SQLAlchemy Connection behind `conn` (a Connection or a Session), else None."""
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(conn, Session):
        return conn.connection()  # joins (or begins) the session's transaction
    if isinstance(conn, Connection):
        return conn
    return None


def _require_psycopg_driver(sa_conn: Any) -> None:
    """pgjobs' statements are psycopg's (`psycopg.sql`), so SQLAlchemy must drive psycopg."""
    if sa_conn.dialect.driver != "psycopg":
        raise TypeError(
            "pgjobs needs SQLAlchemy's psycopg 3 driver (postgresql+psycopg://...); "
            f"this engine uses {sa_conn.dialect.driver!r}"
        )


def caller_psycopg_connection(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg connection under a caller's connection, inside the caller's
    transaction (begun on a SQLAlchemy Connection that had none), so that the worker's
    statements (claim, outcomes) can run in a test's own transaction."""
    if isinstance(conn, psycopg.Connection):
        return conn
    sa_conn = _caller_sqlalchemy(conn)  # a Session begins its transaction here
    if not sa_conn.in_transaction():
        sa_conn.begin()
    raw: psycopg.Connection[Any] = sa_conn.connection.driver_connection
    return raw


def _caller_sqlalchemy(conn: Any) -> Any:
    """The SQLAlchemy Connection of a caller's connection; TypeError when there is none
    or it does not run on psycopg 3."""
    sa_conn = _sqlalchemy_connection(conn)
    if sa_conn is None:
        raise TypeError(
            "conn must be a psycopg Connection, a SQLAlchemy Connection or Session, "
            f"or None; got {type(conn).__name__}"
        )
    _require_psycopg_driver(sa_conn)
    return sa_conn


def _returned_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement returned rows (`cur.description` would build its columns)."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _plain_params(params: AnyParams) -> dict[str, Any] | tuple[Any, ...]:
    """Parameters as SQLAlchemy's `exec_driver_sql` takes them for one execution: a
    dict, or a tuple (a list would mean many executions)."""
    return dict(params) if isinstance(params, Mapping) else tuple(params)


def _cursor(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], reuse: bool
) -> AbstractContextManager[Any]:
    """A tuple-row cursor for one statement, whatever row factory the caller's connection
    has: the connection's kept cursor when `reuse`, else a new one (dropped, with its
    result, when the statement's function returns)."""
    return reused_cursor(conn) if reuse else nullcontext(conn.cursor(row_factory=tuple_row))


def _run_on(
    conn: Any, query: sql.SQL, params: AnyParams, *, reuse_cursor: bool = False
) -> list[tuple[Any, ...]]:
    """`query`'s rows as tuples, on a caller's psycopg or SQLAlchemy connection.

    `reuse_cursor` is for statements whose result is small (see `reused_cursor`).
    """
    if isinstance(conn, psycopg.Connection):
        with _cursor(conn, reuse_cursor) as cur:
            cur.execute(query, params)
            return cur.fetchall() if _returned_rows(cur) else []
    sa_conn = _caller_sqlalchemy(conn)
    raw = sa_conn.connection.driver_connection
    result = sa_conn.exec_driver_sql(query.as_string(raw), _plain_params(params))
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []


async def _sqlalchemy_async_connection(conn: Any) -> Any | None:
    """The SQLAlchemy AsyncConnection behind `conn` (one, or an AsyncSession), else None."""
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # no greenlet: then `conn` cannot be one of them
        return None

    if isinstance(conn, AsyncSession):
        return await conn.connection()  # joins (or begins) the session's transaction
    if isinstance(conn, AsyncConnection):
        return conn
    return None


async def _caller_sqlalchemy_async(conn: Any) -> Any:
    """The SQLAlchemy AsyncConnection of a caller's async connection; TypeError when there
    is none or it does not run on psycopg 3."""
    sa_conn = await _sqlalchemy_async_connection(conn)
    if sa_conn is None:
        raise TypeError(
            "conn must be a psycopg AsyncConnection, a SQLAlchemy AsyncConnection or "
            f"AsyncSession, or None; got {type(conn).__name__} (a synchronous connection "
            "takes enqueue, not enqueue_async)"
        )
    _require_psycopg_driver(sa_conn)
    return sa_conn


async def _caller_async_psycopg_connection(conn: Any) -> psycopg.AsyncConnection[Any]:
    """`caller_psycopg_connection` for async callers: the psycopg AsyncConnection under
    `conn`, inside the caller's transaction."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    sa_conn = await _caller_sqlalchemy_async(conn)
    if not sa_conn.in_transaction():
        await sa_conn.begin()
    raw: psycopg.AsyncConnection[Any] = sa_conn.sync_connection.connection.driver_connection
    return raw


async def _run_on_async(
    conn: Any, query: sql.SQL, params: AnyParams, *, reuse_cursor: bool = False
) -> list[tuple[Any, ...]]:
    """`_run_on` on a caller's async connection."""
    if isinstance(conn, psycopg.AsyncConnection):
        with _cursor(conn, reuse_cursor) as cur:
            await cur.execute(query, params)
            return await cur.fetchall() if _returned_rows(cur) else []
    sa_conn = await _caller_sqlalchemy_async(conn)
    raw = sa_conn.sync_connection.connection.driver_connection
    result = await sa_conn.exec_driver_sql(query.as_string(raw), _plain_params(params))
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []
