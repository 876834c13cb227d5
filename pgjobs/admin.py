"""Inspecting and managing jobs: what `pgjobs stats/list/show/retry/cancel/prune` do.

The functions take an App, so applications can call them as the CLI does. Retry and
cancel are all or nothing: they lock and check every requested job first, and change
none of them unless all of them can be changed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any

import psycopg

from pgjobs.app import App
from pgjobs.errors import ConfigurationError, JobNotFoundError, JobStateError
from pgjobs.job import FINISHED_STATES, RETRYABLE_STATES, STATES, UNFINISHED_STATES, Job, JobState
from pgjobs.store import QueueStats

PRUNE_BATCH_SIZE = 10_000
CANCELLABLE_STATES = UNFINISHED_STATES
_BIGINT_MAX = 2**63 - 1

__all__ = [
    "QueueStats",
    "cancel_jobs",
    "check_states",
    "get_job",
    "list_jobs",
    "prune_jobs",
    "queue_stats",
    "retry_jobs",
]


def queue_stats(app: App) -> list[QueueStats]:
    """Statistics of every queue that has jobs, by queue name, in one statement."""
    with app.database.transaction() as conn:
        return app.store.queue_stats(conn)


def list_jobs(
    app: App,
    *,
    states: Collection[str] = (),
    queues: Collection[str] = (),
    tasks: Collection[str] = (),
    limit: int = 50,
) -> list[Job]:
    """The newest `limit` jobs matching every given filter (an empty filter matches all)."""
    check_states(states)
    if limit < 1:
        raise ConfigurationError(f"limit must be at least 1, got {limit}")
    with app.database.transaction() as conn:
        return app.store.list_jobs(
            conn,
            states=[str(state) for state in states] or None,
            queues=list(queues) or None,
            tasks=list(tasks) or None,
            limit=limit,
        )


def get_job(app: App, job_id: int) -> Job:
    """One job, with `errors` holding its attempt history."""
    if _in_bigint_range(job_id):
        with app.database.transaction() as conn:
            job = app.store.get_job(conn, job_id)
        if job is not None:
            return job
    raise JobNotFoundError(f"no job with id {job_id}")


def retry_jobs(app: App, ids: Iterable[int]) -> list[int]:
    """Put failed or cancelled jobs back in their queue to run now; returns their ids.

    A job that ran out of attempts gets one more. Waiting workers are woken.
    Raises `JobNotFoundError` or `JobStateError` and changes nothing when any id is
    unknown, in another state, or would take a `unique_key` that an unfinished job holds.
    """
    wanted = _distinct(ids)
    if not wanted:
        return []
    with app.database.transaction() as conn:
        locked = _lock(conn, app, wanted)
        problems = _wrong_state(locked, RETRYABLE_STATES, "retried")
        problems.update(_unique_key_conflicts(conn, app, locked, problems))
        if problems:
            raise JobStateError(problems)
        try:
            changed = app.store.retry_jobs(conn, wanted)
        except psycopg.errors.UniqueViolation:
            # A producer enqueued a job with the same unique_key after the check above.
            raise JobStateError(
                {job_id: f"job {job_id}'s unique_key was taken meanwhile" for job_id in wanted}
            ) from None
    return _in_order(wanted, changed)


def cancel_jobs(app: App, ids: Iterable[int]) -> list[int]:
    """Cancel waiting or running jobs; returns their ids.

    A running job's worker learns of it at its next heartbeat and its result is dropped.
    Raises `JobNotFoundError` or `JobStateError` and changes nothing when any id is
    unknown or already finished.
    """
    wanted = _distinct(ids)
    if not wanted:
        return []
    with app.database.transaction() as conn:
        locked = _lock(conn, app, wanted)
        problems = _wrong_state(locked, CANCELLABLE_STATES, "cancelled")
        if problems:
            raise JobStateError(problems)
        changed = app.store.cancel_jobs(conn, wanted)
    return _in_order(wanted, changed)


def prune_jobs(
    app: App,
    older_than_seconds: float,
    states: Collection[str] = FINISHED_STATES,
    *,
    batch_size: int = PRUNE_BATCH_SIZE,
) -> int:
    """Delete jobs in `states` that finished more than `older_than_seconds` ago.

    Deletes `batch_size` rows per transaction, so a large prune never holds a long lock
    or one huge transaction. Returns how many jobs were deleted.
    """
    check_states(states)
    unfinished = [state for state in states if state not in FINISHED_STATES]
    if unfinished or not states:
        raise ConfigurationError(
            "only finished jobs can be pruned; choose states from "
            + ", ".join(s.value for s in FINISHED_STATES)
        )
    if not math.isfinite(older_than_seconds) or older_than_seconds < 0:
        raise ConfigurationError(f"older_than must be >= 0 seconds, got {older_than_seconds}")
    deleted = 0
    while True:
        with app.database.transaction() as conn:
            batch = app.store.prune_batch(
                conn,
                states=[str(state) for state in states],
                older_than_seconds=float(older_than_seconds),
                batch_size=batch_size,
            )
        deleted += batch
        if batch < batch_size:
            return deleted


def check_states(states: Iterable[str]) -> None:
    """Raise `ConfigurationError` naming the first value that is not a job state."""
    for state in states:
        if state not in STATES:
            names = ", ".join(s.value for s in STATES)
            raise ConfigurationError(f"unknown state {state!r}; choose from {names}")


def _distinct(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def _in_bigint_range(job_id: int) -> bool:
    return 0 < job_id <= _BIGINT_MAX


def _lock(
    conn: psycopg.Connection[Any], app: App, wanted: list[int]
) -> dict[int, tuple[JobState, str | None]]:
    """Lock the requested jobs; {id: (state, unique_key)}, or JobNotFoundError."""
    locked = app.store.lock_jobs(conn, [job_id for job_id in wanted if _in_bigint_range(job_id)])
    missing = [job_id for job_id in wanted if job_id not in locked]
    if len(missing) == 1:
        raise JobNotFoundError(f"no job with id {missing[0]}")
    if missing:
        raise JobNotFoundError(f"no jobs with ids {', '.join(map(str, missing))}")
    return locked


def _wrong_state(
    locked: dict[int, tuple[JobState, str | None]], allowed: tuple[JobState, ...], done: str
) -> dict[int, str]:
    """Refusals for the locked jobs whose state does not allow the change."""
    names = " or ".join(state.value for state in allowed)
    return {
        job_id: f"job {job_id} is {state.value}; only {names} jobs can be {done}"
        for job_id, (state, _) in locked.items()
        if state not in allowed
    }


def _unique_key_conflicts(
    conn: psycopg.Connection[Any],
    app: App,
    locked: dict[int, tuple[JobState, str | None]],
    already_refused: Collection[int],
) -> dict[int, str]:
    """Jobs whose retry would give a unique_key a second unfinished holder."""
    candidates = {
        job_id: key
        for job_id, (_, key) in locked.items()
        if key is not None and job_id not in already_refused
    }
    if not candidates:
        return {}
    holders = app.store.unique_key_holders(conn, list(candidates.values()))
    problems = {}
    first_retried: dict[str, int] = {}
    for job_id, key in sorted(candidates.items()):
        if key in holders:
            problems[job_id] = (
                f"job {job_id} cannot be retried: job {holders[key]} already holds "
                f"its unique_key {key!r}"
            )
        elif key in first_retried:
            problems[job_id] = (
                f"job {job_id} cannot be retried with job {first_retried[key]}: "
                f"both have unique_key {key!r}"
            )
        else:
            first_retried[key] = job_id
    return problems


def _in_order(wanted: list[int], changed: set[int]) -> list[int]:
    return [job_id for job_id in wanted if job_id in changed]
