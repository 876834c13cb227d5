"""The values every layer shares: a job's states and rows, a worker's record.

A leaf: it imports nothing of pgjobs' above `storable`, so the data layer, the producer,
the worker and the CLI can all use these types without importing each other. Kept free
of SQLAlchemy and psycopg so that importing pgjobs (and starting the CLI) stays cheap;
`schema.py` builds the table from these names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, NamedTuple, TypeAlias

from pgjobs.storable import storable_json


class JobState(str, Enum):
    """The states of a job (the `state` column). Compares equal to its text."""

    AVAILABLE = "available"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # a workflow step waiting for its dependencies

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the final states, which only `retry` or pruning change."""
        return self in FINISHED_STATES


# What `enqueue(conn, ...)` accepts: a psycopg Connection, a SQLAlchemy Connection or
# Session (or their asyncio forms for `enqueue_async`), or None for pgjobs' own pool.
# Typed loosely so that SQLAlchemy stays an import-time detail.
CallerConnection: TypeAlias = Any

STATES: tuple[JobState, ...] = tuple(JobState)
# The states a unique_key is held in (a workflow step, which may be blocked, has none).
UNFINISHED_STATES = (JobState.AVAILABLE, JobState.RUNNING)
# The states `cancel` stops: waiting, blocked or running.
CANCELLABLE_STATES = (JobState.AVAILABLE, JobState.RUNNING, JobState.BLOCKED)
FINISHED_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
RETRYABLE_STATES = (JobState.FAILED, JobState.CANCELLED)

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Job:
    """One row of `<schema>.jobs`, as the admin API and the CLI return it.

    `errors` is the attempt history: one dict per failed attempt with `attempt`, `at`,
    `error`, `traceback` and `worker`. `worker_id` is the worker that holds a running job,
    or the one that finished a completed or failed one.
    """

    id: int
    queue: str
    task: str
    payload: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker_id: str | None
    unique_key: str | None
    errors: list[dict[str, Any]]
    scheduled_at: datetime | None = None  # the tick of a periodic job
    # When the running attempt was readied for a worker's thread; None while the job
    # waits, claimed, in a worker's buffer (migration 0007).
    began_at: datetime | None = None
    # The return value of a task that stores results (migration 0009).
    result: Any = None
    # A workflow step's workflow, step name, dependencies (job ids) and `run_if`.
    workflow_id: int | None = None
    step: str | None = None
    depends_on: list[int] | None = None
    run_if: str | None = None
    # Metadata that travels with the job: trace context, tenant ids (migration 0011).
    meta: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """Build from a row that has every column (see `data/inspect.py`'s JOB_COLUMNS)."""
        return cls(**{**row, "state": JobState(row["state"])})

    @property
    def last_error(self) -> str | None:
        """The error message of the last failed attempt, if any."""
        return str(self.errors[-1].get("error")) if self.errors else None

    def as_dict(self) -> dict[str, Any]:
        """The row as plain values, for JSON output."""
        return {
            name: (value.value if isinstance(value, JobState) else value)
            for name, value in vars(self).items()
        }


class JobRow(NamedTuple):
    """One validated job, ready to insert; fields in the order the COPY sends them."""

    queue: str
    task: str
    payload_json: str
    priority: int
    run_at: datetime | None
    delay_seconds: float
    max_attempts: int
    unique_key: str | None
    meta_json: str | None = None  # `jobs.meta`: set by enqueue middleware or `meta=`


@dataclass(frozen=True)
class WorkerRegistration:
    """What a worker says about itself in its row; `queues` None means every queue.

    `duties`: what it may lead besides the fleet's upkeep (`periodic`, `retention`).
    """

    id: str
    host: str
    pid: int
    queues: list[str] | None
    concurrency: int
    version: str
    rescue_after: float
    duties: list[str]

    def as_params(self) -> dict[str, Any]:
        """The row's values as statement parameters, one per field."""
        return asdict(self)


@dataclass(frozen=True)
class RegisteredWorker(WorkerRegistration):
    """A row of `<schema>.workers` with the jobs its worker holds now.

    `jobs` are the ids of the jobs `running` under this worker's id (running, or claimed
    and waiting for a thread); `tasks` counts them by task. For a lost worker they are
    the jobs waiting to be rescued.
    """

    started_at: datetime
    last_heartbeat_at: datetime
    lost: bool
    tasks: dict[str, int]
    jobs: list[int]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RegisteredWorker:
        """Build from a row of the LIST_WORKERS statement."""
        fields = {name: row[name] for name in cls.__dataclass_fields__ if name != "jobs"}
        return cls(**fields, jobs=list(row["job_ids"]))

    def silent_for(self, now: datetime | None = None) -> timedelta:
        """How long since the last heartbeat."""
        return (now or datetime.now(timezone.utc)) - self.last_heartbeat_at

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The JSON shape of `pgjobs workers --json`."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "version": self.version,
            "rescue_after": self.rescue_after,
            "duties": self.duties,
            "started_at": self.started_at,
            "last_heartbeat_at": self.last_heartbeat_at,
            "silent_seconds": round(self.silent_for(now).total_seconds(), 3),
            "holding": len(self.jobs),
            "tasks": self.tasks,
            "jobs": self.jobs,
        }


# The values that flow between the worker's parts. Named tuples rather than dataclasses:
# thousands are made every second, and a tuple is built in C, immutable all the same.


class ClaimedJob(NamedTuple):
    """A job this worker claimed; `attempt` is the attempt now running (from 1).

    `run_at_epoch` is when it became runnable, in seconds since the epoch, so that
    `time.time() - run_at_epoch` is how long it has waited (a float is read from the
    claim at less than half the cost of a timestamptz, and needs no conversion).
    `scheduled_at` is the tick a periodic job was enqueued for (None for other jobs).
    `workflow_id` is set for a workflow's step, whose outcome releases its dependents.
    `priority` orders the jobs a worker holds, with `run_at_epoch` and `id`.
    `meta_json` is the job's metadata (`jobs.meta`) as JSON text, None when it has none.
    """

    id: int
    queue: str
    task: str
    payload_json: str
    attempt: int
    max_attempts: int
    run_at_epoch: float
    scheduled_at: datetime | None = None
    priority: int = 0
    workflow_id: int | None = None  # a workflow step's workflow
    meta_json: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """The task's arguments. They arrive as JSON text and are decoded by the thread
        that runs the job: decoding a batch in the fetcher made every claim twice as long
        and held back the next one."""
        arguments: dict[str, Any] = json.loads(self.payload_json)
        return arguments

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ClaimedJob:
        """Build from a row of the CLAIM statement's RETURNING list."""
        return cls._make(row)

    def log_fields(self) -> dict[str, Any]:
        """The structured-log fields that identify this attempt."""
        return {"job_id": self.id, "task": self.task, "queue": self.queue, "attempt": self.attempt}


class Outcome(NamedTuple):
    """What to write for one finished attempt: a row of the RECORD_OUTCOMES batch.

    `state` is the job's new state; why the attempt ended so is its `Ending` (events.py).
    `delay` None keeps the job's `run_at` (a job handed back keeps its place in line).
    `result_json` is a completed attempt's return value, for a task that stores results;
    `watched` marks the outcome of a job that stores a result or is a workflow's step:
    someone may wait for it or depend on it, so its completion is written by the
    statement that wakes result waiters and releases dependents. `releases` marks a
    workflow step's completion: its dependents wait for it, so it is written at once.
    """

    job_id: int
    attempt: int
    state: JobState
    delay: float | None = 0.0
    error: dict[str, Any] | None = None
    attempts_delta: int = 0
    max_attempts_delta: int = 0
    result_json: str | None = None
    watched: bool = False
    releases: bool = False

    @property
    def error_json(self) -> str | None:
        """The `errors` entry as JSON that jsonb accepts whatever the task's message held."""
        if self.error is None:
            return None
        return storable_json(json.dumps(self.error, default=str, ensure_ascii=False))
