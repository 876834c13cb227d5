"""Deciding what an attempt's result means: complete, retry with backoff, fail, snooze.

Pure functions of the job, the exception and the retry policy, with randomness passed
in, so every branch is tested without a database or a clock.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from pgjobs.errors import FailJob, SnoozeJob
from pgjobs.retry import Backoff
from pgjobs.worker.jobs import ClaimedJob, Outcome, failed_attempt, snoozed


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
