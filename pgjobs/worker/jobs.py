"""The values that flow between the worker's parts: claimed jobs and their outcomes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker claimed; `attempt` is the attempt now running (from 1)."""

    id: int
    queue: str
    task: str
    payload: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ClaimedJob:
        """Build from a row of the CLAIM statement's RETURNING list."""
        job_id, queue, task, payload, priority, attempt, max_attempts, created_at = row
        return cls(job_id, queue, task, payload, priority, attempt, max_attempts, created_at)

    def log_fields(self) -> dict[str, Any]:
        """The structured-log fields that identify this attempt."""
        return {"job_id": self.id, "task": self.task, "queue": self.queue, "attempt": self.attempt}


@dataclass(frozen=True)
class Outcome:
    """What to write for one finished attempt: a row of the RECORD_OUTCOMES batch."""

    job_id: int
    attempt: int
    state: str
    delay: float = 0.0
    error: dict[str, Any] | None = None
    attempts_delta: int = 0
    max_attempts_delta: int = 0

    @property
    def error_json(self) -> str | None:
        return None if self.error is None else json.dumps(self.error, default=str)


def completed(job: ClaimedJob) -> Outcome:
    """The attempt succeeded."""
    return Outcome(job.id, job.attempt, "completed")


def put_back(job: ClaimedJob) -> Outcome:
    """Shutdown interrupted the attempt: waiting again at once, the attempt given back."""
    return Outcome(job.id, job.attempt, "available", attempts_delta=-1)


def snoozed(job: ClaimedJob, delay: float) -> Outcome:
    """The task asked to run later; not a failure, so it costs no attempt."""
    return Outcome(job.id, job.attempt, "available", delay=delay, max_attempts_delta=1)


def failed_attempt(job: ClaimedJob, error: dict[str, Any], *, retry_delay: float | None) -> Outcome:
    """A failed attempt: retried after `retry_delay` seconds, or failed for good if None."""
    if retry_delay is None:
        return Outcome(job.id, job.attempt, "failed", error=error)
    return Outcome(job.id, job.attempt, "available", delay=retry_delay, error=error)
