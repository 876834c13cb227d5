"""Deciding what an attempt's result means: complete, retry with backoff, fail, snooze.

Pure functions of the job, the exception and the retry policy, with randomness passed
in, so every branch is tested without a database or a clock; `OutcomePolicy` applies
them with each task's own retry policy.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from pgjobs.errors import FailJob, ResultNotStorableError, SnoozeJob
from pgjobs.retry import Backoff
from pgjobs.storable import json_is_storable
from pgjobs.tasks import Task
from pgjobs.types import ClaimedJob, JobState, Outcome

log = logging.getLogger("pgjobs.worker")

AVAILABLE, COMPLETED, FAILED = JobState.AVAILABLE, JobState.COMPLETED, JobState.FAILED


def error_entry(job: ClaimedJob, worker_id: str, message: str, trace: str | None) -> dict[str, Any]:
    """One element of the `errors` column (the database adds the time, `at`)."""
    return {"attempt": job.attempt, "error": message, "traceback": trace, "worker": worker_id}


def describe(error: BaseException) -> str:
    """`ValueError: boom`, the way a traceback's last line reads."""
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def outcome_of_exception(
    job: ClaimedJob,
    error: BaseException,
    *,
    backoff: Backoff,
    random: Callable[[], float],
    worker_id: str,
) -> Outcome:
    """The outcome of an attempt that raised `error`."""
    if isinstance(error, SnoozeJob):
        return snoozed(job, error.delay)
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    entry = error_entry(job, worker_id, describe(error), trace)
    if isinstance(error, FailJob):
        return failed_attempt(job, entry, retry_delay=None)
    return failure(job, entry, backoff=backoff, random=random)


def failure(
    job: ClaimedJob, entry: dict[str, Any], *, backoff: Backoff, random: Callable[[], float]
) -> Outcome:
    """Retry after the backoff delay, or fail for good when no attempt is left."""
    if job.attempt >= job.max_attempts:
        return failed_attempt(job, entry, retry_delay=None)
    return failed_attempt(job, entry, retry_delay=backoff.delay(job.attempt, random))


def outcome_of_timeout(
    job: ClaimedJob,
    timeout: float,
    *,
    backoff: Backoff,
    random: Callable[[], float],
    worker_id: str,
) -> Outcome:
    """The outcome of an attempt that ran past its task's timeout."""
    entry = error_entry(job, worker_id, f"TimeoutError: timed out after {timeout:g}s", None)
    entry["timed_out"] = True
    return failure(job, entry, backoff=backoff, random=random)


class OutcomePolicy:
    """What an attempt's result means in this worker: each task's retry policy (else the
    App's `backoff`), randomness passed in, and the worker its `errors` entries name."""

    def __init__(
        self,
        tasks: Mapping[str, Task[Any, Any]],
        backoff: Backoff,
        random: Callable[[], float],
        worker_id: str,
    ) -> None:
        self.tasks = tasks
        self.backoff = backoff
        self.random = random
        self.worker_id = worker_id

    def of_exception(self, job: ClaimedJob, error: BaseException) -> Outcome:
        """The outcome of an attempt whose task raised `error`.

        A retry policy that fails to give a delay (a custom one with a bug) must not
        cost the attempt its outcome: the default policy decides instead, and says so.
        """
        try:
            return self._decide(outcome_of_exception, job, error, self.backoff_of(job.task))
        except Exception:
            log.exception("retry policy failed; using the default backoff", extra=job.log_fields())
            return self._decide(outcome_of_exception, job, error, Backoff())

    def of_return(self, job: ClaimedJob, task: Task[Any, Any], value: Any) -> Outcome:
        """The outcome of an attempt whose task returned `value`: completed, with the
        value as JSON for a task that stores its result. A value that cannot be stored
        raises `ResultNotStorableError`, which the executor treats as the task's own
        error (the attempt fails and retries by policy)."""
        if not task.store_result:
            return completed(job)
        return completed(job, result_as_json(task, value))

    def of_timeout(self, job: ClaimedJob, timeout: float) -> Outcome:
        """The outcome of an attempt that ran past its task's `timeout`."""
        return self._decide(outcome_of_timeout, job, timeout, self.backoff_of(job.task))

    def backoff_of(self, task_name: str) -> Backoff:
        """The retry policy of `task_name`'s jobs."""
        task = self.tasks.get(task_name)
        return (task.backoff if task is not None else None) or self.backoff

    def _decide(
        self, decide: Callable[..., Outcome], job: ClaimedJob, cause: object, backoff: Backoff
    ) -> Outcome:
        return decide(job, cause, backoff=backoff, random=self.random, worker_id=self.worker_id)


def completed(job: ClaimedJob, result_json: str | None = None) -> Outcome:
    """The attempt succeeded (and returned `result_json`, for a task that stores it).

    Watched (written by the statement that wakes waiters and releases dependents) when
    it stores a result or is a workflow's step.
    """
    if result_json is None and job.workflow_id is None:
        return Outcome(job.id, job.attempt, COMPLETED)
    step = job.workflow_id is not None
    return Outcome(
        job.id, job.attempt, COMPLETED, result_json=result_json, watched=True, releases=step
    )


def result_as_json(task: Task[Any, Any], value: Any) -> str:
    """A task's return value as JSON text jsonb accepts, within its `result_max_bytes`."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ResultNotStorableError(
            f"result of task {task.name!r} is not JSON-serialisable: {error}"
        ) from None
    if not json_is_storable(text):
        raise ResultNotStorableError(
            f"result of task {task.name!r} holds a NUL character or a lone surrogate, "
            "which PostgreSQL cannot store"
        )
    size = len(text.encode())
    if size > task.result_max_bytes:
        raise ResultNotStorableError(
            f"result of task {task.name!r} is {size} bytes of JSON, over its "
            f"result_max_bytes of {task.result_max_bytes}"
        )
    return text


def put_back(job: ClaimedJob) -> Outcome:
    """Shutdown interrupted the attempt, or the worker hands back a job it claimed and
    will not start soon: waiting again at once, in its place, the attempt given back."""
    return Outcome(job.id, job.attempt, AVAILABLE, delay=None, attempts_delta=-1)


def snoozed(job: ClaimedJob, delay: float) -> Outcome:
    """The task asked to run later; not a failure, so it costs no attempt."""
    return Outcome(job.id, job.attempt, AVAILABLE, delay=delay, max_attempts_delta=1)


def failed_attempt(job: ClaimedJob, error: dict[str, Any], *, retry_delay: float | None) -> Outcome:
    """A failed attempt: retried after `retry_delay` seconds, or failed for good if None."""
    if retry_delay is None:
        return Outcome(job.id, job.attempt, FAILED, error=error)
    return Outcome(job.id, job.attempt, AVAILABLE, delay=retry_delay, error=error)


def unstorable(outcome: Outcome, reason: str) -> Outcome:
    """Replaces an outcome the database refused: the attempt failed, saying why."""
    worker = outcome.error.get("worker") if outcome.error else None
    error = {
        "attempt": outcome.attempt,
        "error": f"outcome could not be stored: {reason}",
        "traceback": None,
        "worker": worker,
    }
    return Outcome(outcome.job_id, outcome.attempt, FAILED, error=error)
