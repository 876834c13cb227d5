"""The data-access layer: the only module that runs pgjobs' SQL.

Every statement lives in `queries.py`; this module shapes its parameters, runs it on the
connection it is given and turns the rows into typed values. Callers decide which
connection and which transaction: the producer's own, a pooled one, or one of the
worker's dedicated connections. A caller's connection may be psycopg or SQLAlchemy;
`_rows` hides the difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgjobs.errors import SchemaNotMigratedError
from pgjobs.job import STATES, Job, JobState
from pgjobs.queries import Queries

if TYPE_CHECKING:
    from pgjobs.enqueue import JobRow
    from pgjobs.worker.jobs import ClaimedJob, Outcome

Params = Mapping[str, Any]


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
        if len(rows) == 1:
            [row] = rows
            one = {
                "queue": row.queue,
                "task": row.task,
                "payload": row.payload_json,
                "priority": row.priority,
                "run_at": row.run_at,
                "delay": row.delay_seconds,
                "max_attempts": row.max_attempts,
                "unique_key": row.unique_key,
            }
            return [(r[0], r[1]) for r in self._rows(conn, self.queries.enqueue_one, one)]
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
        return [(row[0], row[1]) for row in self._rows(conn, self.queries.enqueue, params)]

    def unique_key_holders(self, conn: Any, keys: Sequence[str]) -> dict[str, int]:
        """{unique_key: id} of the unfinished jobs holding any of `keys`."""
        rows = self._rows(conn, self.queries.unique_key_holders, {"unique_keys": list(keys)})
        return {key: job_id for key, job_id in rows}

    # --- the worker -------------------------------------------------------------------

    def claim(
        self, conn: psycopg.Connection[Any], *, limit: int, queue: str | None, worker_id: str
    ) -> list[ClaimedJob]:
        """Claim up to `limit` runnable jobs (of `queue`, or of any queue when None)."""
        from pgjobs.worker.jobs import ClaimedJob

        query = self.queries.claim_any_queue if queue is None else self.queries.claim_from_queue
        params = {"limit": limit, "worker_id": worker_id, "queue": queue}
        rows = conn.execute(query, params, binary=True).fetchall()
        return [ClaimedJob.from_row(row) for row in rows]

    def record_outcomes(
        self, conn: psycopg.Connection[Any], outcomes: Sequence[Outcome], *, worker_id: str
    ) -> set[int]:
        """Write finished attempts; the ids whose outcome was applied.

        Successes take the cheaper COMPLETE_JOBS. An outcome is dropped when its job is no
        longer this attempt, running, and ours (it was cancelled or rescued meanwhile).
        """
        successes = [o for o in outcomes if o.state == "completed"]
        others = [o for o in outcomes if o.state != "completed"] if successes else outcomes
        applied: set[int] = set()
        if successes:
            completions = {
                "ids": int_array([o.job_id for o in successes]),
                "attempts": int_array([o.attempt for o in successes]),
                "worker_id": worker_id,
            }
            applied.update(row[0] for row in conn.execute(self.queries.complete_jobs, completions))
        if not others:
            return applied
        params = {
            "ids": [o.job_id for o in others],
            "attempts": [o.attempt for o in others],
            "states": [o.state for o in others],
            "delays": [o.delay for o in others],
            "errors": [o.error_json for o in others],
            "attempts_deltas": [o.attempts_delta for o in others],
            "max_attempts_deltas": [o.max_attempts_delta for o in others],
            "worker_id": worker_id,
        }
        applied.update(row[0] for row in conn.execute(self.queries.record_outcomes, params))
        return applied

    def heartbeat(
        self, conn: psycopg.Connection[Any], ids: Sequence[int], *, worker_id: str
    ) -> set[int]:
        """Refresh `heartbeat_at` of the jobs still ours; returns their ids."""
        params = {"ids": int_array(ids), "worker_id": worker_id}
        return {row[0] for row in conn.execute(self.queries.heartbeat, params)}

    def rescue(
        self, conn: psycopg.Connection[Any], *, rescue_after: float
    ) -> list[tuple[int, str]]:
        """Put back (or fail) jobs of workers silent for `rescue_after` s: (id, new state)."""
        params = {
            "rescue_after": rescue_after,
            "lock_name": f"pgjobs.rescue:{self.schema}",
            "channel": self.channel,
        }
        return [(row[0], row[1]) for row in conn.execute(self.queries.rescue, params)]

    def listen(self, conn: psycopg.Connection[Any]) -> None:
        """LISTEN on the schema's channel (the connection must be in autocommit)."""
        conn.execute(self.queries.listen)

    # --- inspection and administration ---------------------------------------------------

    def schema_exists(self, conn: psycopg.Connection[Any]) -> bool:
        """True once `pgjobs migrate` has created the jobs table of this schema."""
        params = {"jobs_table": self.queries.jobs_table_name}
        row = conn.execute(self.queries.schema_exists, params).fetchone()
        return bool(row and row[0])

    def queue_stats(self, conn: psycopg.Connection[Any]) -> list[QueueStats]:
        """Statistics of every queue that has jobs, by queue name, in one pass."""
        return [
            QueueStats(
                queue=row["queue"],
                counts={state: row[state.value] for state in STATES},
                oldest_waiting=row["oldest_waiting"],
                finished_last_minute=row["finished_last_minute"],
                finished_last_5_minutes=row["finished_last_5_minutes"],
            )
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
        """Cancel waiting or running jobs; the ids changed."""
        return {row[0] for row in self._rows(conn, self.queries.cancel_jobs, {"ids": list(ids)})}

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

    def _dict_rows(
        self, conn: psycopg.Connection[Any], query: sql.Composed, params: Params
    ) -> list[dict[str, Any]]:
        with self._reporting_missing_schema(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def _rows(self, conn: Any, query: sql.Composed, params: Params) -> list[tuple[Any, ...]]:
        """Run `query` on a psycopg or SQLAlchemy connection, inside its transaction."""
        with self._reporting_missing_schema():
            return _run_on(conn, query, params)

    @contextmanager
    def _reporting_missing_schema(self) -> Iterator[None]:
        """Turn "relation does not exist" into the error that says to migrate."""
        try:
            yield
        except psycopg.errors.UndefinedTable as error:
            raise SchemaNotMigratedError.for_schema(self.schema) from error
        except Exception as error:
            # SQLAlchemy wraps driver errors; unwrap the one case users can fix themselves.
            if isinstance(getattr(error, "orig", None), psycopg.errors.UndefinedTable):
                raise SchemaNotMigratedError.for_schema(self.schema) from error
            raise


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


def _run_on(conn: Any, query: sql.Composed, params: Params) -> list[tuple[Any, ...]]:
    if isinstance(conn, psycopg.Connection):
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    sa_conn = _sqlalchemy_connection(conn)
    if sa_conn is None:
        raise TypeError(
            "conn must be a psycopg Connection, a SQLAlchemy Connection or Session, "
            f"or None; got {type(conn).__name__}"
        )
    if sa_conn.dialect.driver != "psycopg":
        raise TypeError(
            "pgjobs needs SQLAlchemy's psycopg 3 driver (postgresql+psycopg://...); "
            f"this engine uses {sa_conn.dialect.driver!r}"
        )
    raw = sa_conn.connection.driver_connection
    result = sa_conn.exec_driver_sql(query.as_string(raw), dict(params))
    return [tuple(row) for row in result.fetchall()] if result.returns_rows else []
