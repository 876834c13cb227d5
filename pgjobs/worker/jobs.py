"""The values that flow between the worker's parts: claimed jobs and their outcomes.

Both are named tuples rather than dataclasses: thousands are made every second, and a
tuple is built in C, immutable all the same.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from pgjobs.storable import storable_json


class ClaimedJob(NamedTuple):
    """A job this worker claimed; `attempt` is the attempt now running (from 1).

    `run_at_epoch` is when it became runnable, in seconds since the epoch, so that
    `time.time() - run_at_epoch` is how long it has waited (a float is read from the
    claim at less than half the cost of a timestamptz, and needs no conversion).
    `scheduled_at` is the tick a periodic job was enqueued for (None for other jobs).
    `priority` orders the jobs a worker holds, with `run_at_epoch` and `id`.
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


def start_order(job: ClaimedJob) -> tuple[int, float, int]:
    """The order a worker starts the jobs it holds: `priority DESC, run_at, id`, as claimed."""
    return (-job.priority, job.run_at_epoch, job.id)


class Outcome(NamedTuple):
    """What to write for one finished attempt: a row of the RECORD_OUTCOMES batch.

    `delay` None keeps the job's `run_at` (a job handed back keeps its place in line).
    """

    job_id: int
    attempt: int
    state: str
    delay: float | None = 0.0
    error: dict[str, Any] | None = None
    attempts_delta: int = 0
    max_attempts_delta: int = 0

    @property
    def error_json(self) -> str | None:
        """The `errors` entry as JSON that jsonb accepts whatever the task's message held."""
        if self.error is None:
            return None
        return storable_json(json.dumps(self.error, default=str, ensure_ascii=False))


def completed(job: ClaimedJob) -> Outcome:
    """The attempt succeeded."""
    return Outcome(job.id, job.attempt, "completed")


def put_back(job: ClaimedJob) -> Outcome:
    """Shutdown interrupted the attempt, or the worker hands back a job it claimed and
    will not start soon: waiting again at once, in its place, the attempt given back."""
    return Outcome(job.id, job.attempt, "available", delay=None, attempts_delta=-1)


def snoozed(job: ClaimedJob, delay: float) -> Outcome:
    """The task asked to run later; not a failure, so it costs no attempt."""
    return Outcome(job.id, job.attempt, "available", delay=delay, max_attempts_delta=1)


def failed_attempt(job: ClaimedJob, error: dict[str, Any], *, retry_delay: float | None) -> Outcome:
    """A failed attempt: retried after `retry_delay` seconds, or failed for good if None."""
    if retry_delay is None:
        return Outcome(job.id, job.attempt, "failed", error=error)
    return Outcome(job.id, job.attempt, "available", delay=retry_delay, error=error)


def unstorable(outcome: Outcome, reason: str) -> Outcome:
    """Replaces an outcome the database refused: the attempt failed, saying why."""
    worker = outcome.error.get("worker") if outcome.error else None
    error = {
        "attempt": outcome.attempt,
        "error": f"outcome could not be stored: {reason}",
        "traceback": None,
        "worker": worker,
    }
    return Outcome(outcome.job_id, outcome.attempt, "failed", error=error)
