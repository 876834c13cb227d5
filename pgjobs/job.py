"""What a job is, as the rest of pgjobs and its users see it: its states and its row.

Kept free of SQLAlchemy and psycopg so that importing pgjobs (and starting the CLI) stays
cheap; `schema.py` builds the table from these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any


class JobState(str, Enum):
    """The states of a job (the `state` column). Compares equal to its text."""

    AVAILABLE = "available"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the final states, which only `retry` or pruning change."""
        return self in FINISHED_STATES


STATES: tuple[JobState, ...] = tuple(JobState)
UNFINISHED_STATES = (JobState.AVAILABLE, JobState.RUNNING)
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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """Build from a row that has every column (see `queries.JOB_COLUMNS`)."""
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
