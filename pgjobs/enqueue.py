"""Turning enqueue calls into rows: validation, JSON encoding and the batched INSERT.

Everything is checked before the statement runs, so bad input raises a precise error and
writes nothing, even inside the caller's transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgjobs.db import CallerConnection, Database, fetch_all
from pgjobs.errors import (
    InvalidJobError,
    PayloadNotSerializableError,
    PgJobsError,
    SchemaNotMigratedError,
)
from pgjobs.queries import Queries

_UNIQUE_KEY_RACE_RETRIES = 3
MAX_QUEUE_NAME_LENGTH = 200  # queue names travel as NOTIFY payloads (8000 bytes max)
_PG_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class JobOptions:
    """Per-job options; None means "use the task's or the app's default"."""

    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay: float | timedelta | None = None
    max_attempts: int | None = None
    unique_key: str | None = None

    def merged_over(self, defaults: JobOptions) -> JobOptions:
        """These options, falling back to `defaults` field by field."""
        return JobOptions(
            queue=self.queue if self.queue is not None else defaults.queue,
            priority=self.priority if self.priority is not None else defaults.priority,
            run_at=self.run_at if self.run_at is not None else defaults.run_at,
            delay=self.delay if self.delay is not None else defaults.delay,
            max_attempts=(
                self.max_attempts if self.max_attempts is not None else defaults.max_attempts
            ),
            unique_key=self.unique_key if self.unique_key is not None else defaults.unique_key,
        )


@dataclass(frozen=True)
class JobRow:
    """One validated job, ready to insert."""

    task: str
    payload_json: str
    queue: str
    priority: int
    run_at: datetime | None
    delay_seconds: float
    max_attempts: int
    unique_key: str | None


def encode_payload(task: str, payload: Mapping[str, Any]) -> str:
    """JSON for the payload, or an error naming the argument that cannot be stored."""
    if not isinstance(payload, Mapping):
        raise PayloadNotSerializableError(
            f"payload of task {task!r} must be a mapping of argument names to values, "
            f"not {type(payload).__name__}"
        )
    for name, value in payload.items():
        if not isinstance(name, str):
            raise PayloadNotSerializableError(
                f"argument names of task {task!r} must be strings, got {name!r}"
            )
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise PayloadNotSerializableError(
                f"argument {name!r} of task {task!r} is not JSON-serialisable: {error}"
            ) from error
    return json.dumps(payload, allow_nan=False, separators=(",", ":"))


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= _PG_INT_MAX:
        raise InvalidJobError(f"{name} must be between {minimum} and {_PG_INT_MAX}, got {value}")
    return value


def _delay_seconds(delay: float | timedelta | None) -> float:
    if delay is None:
        return 0.0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidJobError(f"delay must be seconds or a timedelta, got {delay!r}")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidJobError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
    return float(seconds)


def build_row(task: str, payload: Mapping[str, Any], options: JobOptions) -> JobRow:
    """Validate one job completely; raises before anything touches the database."""
    if not isinstance(task, str) or not task.strip():
        raise InvalidJobError(f"task name must be a non-empty string, got {task!r}")
    queue = options.queue
    if not isinstance(queue, str) or not queue.strip():
        raise InvalidJobError(f"queue must be a non-empty string, got {queue!r}")
    if len(queue) > MAX_QUEUE_NAME_LENGTH:
        raise InvalidJobError(f"queue name is longer than {MAX_QUEUE_NAME_LENGTH} characters")
    if options.run_at is not None and options.delay is not None:
        raise InvalidJobError("give either run_at or delay, not both")
    run_at = options.run_at
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidJobError(f"run_at must be a datetime, got {run_at!r}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidJobError(
                f"run_at must be timezone-aware (naive datetime {run_at.isoformat()} given)"
            )
    unique_key = options.unique_key
    if unique_key is not None and (not isinstance(unique_key, str) or not unique_key):
        raise InvalidJobError(f"unique_key must be a non-empty string, got {unique_key!r}")
    return JobRow(
        task=task,
        payload_json=encode_payload(task, payload),
        queue=queue,
        priority=_check_int("priority", options.priority, minimum=-_PG_INT_MAX),
        run_at=run_at,
        delay_seconds=_delay_seconds(options.delay),
        max_attempts=_check_int("max_attempts", options.max_attempts, minimum=1),
        unique_key=unique_key,
    )


def insert_jobs(
    conn: CallerConnection, database: Database, queries: Queries, rows: Sequence[JobRow]
) -> list[int]:
    """Insert `rows` in one statement; returns one id per row, in order.

    A row whose unique_key is already held by an unfinished job is not inserted and gets
    the holder's id. With `conn=None` the insert commits at once on pgjobs' own pool.
    """
    if not rows:
        return []
    try:
        if conn is None:
            with database.transaction() as own:
                return _insert(own, queries, rows)
        return _insert(conn, queries, rows)
    except SchemaNotMigratedError:
        raise SchemaNotMigratedError.for_schema(queries.schema) from None


def _params(rows: Sequence[JobRow]) -> dict[str, list[Any]]:
    return {
        "queues": [r.queue for r in rows],
        "tasks": [r.task for r in rows],
        "payloads": [r.payload_json for r in rows],
        "priorities": [r.priority for r in rows],
        "run_ats": [r.run_at for r in rows],
        "delays": [r.delay_seconds for r in rows],
        "max_attempts": [r.max_attempts for r in rows],
        "unique_keys": [r.unique_key for r in rows],
    }


def _insert(conn: Any, queries: Queries, rows: Sequence[JobRow]) -> list[int]:
    ids: list[int | None] = [None] * len(rows)
    pending = list(range(len(rows)))
    # A unique_key's holder can finish between our conflicting insert and the lookup of
    # its id; those rows are simply inserted again, now that the key is free.
    for _ in range(_UNIQUE_KEY_RACE_RETRIES):
        batch = [rows[i] for i in pending]
        inserted = fetch_all(conn, queries.enqueue, _params(batch))
        # Ids come from the identity sequence in insertion order (the INSERT sorts by
        # input position), so sorting them recovers which input row each belongs to.
        inserted.sort(key=lambda row: row[0])
        id_by_key = {key: job_id for job_id, key in inserted if key is not None}
        plain_ids = iter(job_id for job_id, key in inserted if key is None)
        missing = {r.unique_key for r in batch if r.unique_key and r.unique_key not in id_by_key}
        if missing:
            holders = fetch_all(conn, queries.unique_key_holders, {"unique_keys": sorted(missing)})
            id_by_key.update(dict(holders))
        for index, row in zip(pending, batch, strict=True):
            ids[index] = (
                next(plain_ids) if row.unique_key is None else id_by_key.get(row.unique_key)
            )
        pending = [i for i in pending if ids[i] is None]
        if not pending:
            return [job_id for job_id in ids if job_id is not None]
    raise PgJobsError("unique_key holders kept finishing during enqueue; try again")
