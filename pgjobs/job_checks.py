"""Before retry or cancel changes a job: locking it, and the checks that refuse a change.

The changes are all or nothing (`admin.py`): every requested job is locked in id order
and checked before any is changed, so two admins cannot deadlock and no worker moves a
row in between.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import psycopg

from pgjobs.app import App
from pgjobs.bounds import BIGINT_MAX
from pgjobs.data.connector import run
from pgjobs.data.producer import unique_key_holders
from pgjobs.errors import JobNotFoundError
from pgjobs.types import JobState


def distinct(ids: Iterable[int]) -> list[int]:
    """The ids in their first order, each once."""
    return list(dict.fromkeys(ids))


def in_bigint_range(job_id: int) -> bool:
    """Whether an id can name a row (larger ones would make the statement fail)."""
    return 0 < job_id <= BIGINT_MAX


def lock_for_change(
    conn: psycopg.Connection[Any], app: App, wanted: list[int]
) -> dict[int, tuple[JobState, str | None]]:
    """Lock the requested jobs; {id: (state, unique_key)}, or JobNotFoundError."""
    locked = app.data.admin.lock_jobs(
        conn, [job_id for job_id in wanted if in_bigint_range(job_id)]
    )
    missing = [job_id for job_id in wanted if job_id not in locked]
    if len(missing) == 1:
        raise JobNotFoundError(f"no job with id {missing[0]}")
    if missing:
        raise JobNotFoundError(f"no jobs with ids {', '.join(map(str, missing))}")
    return locked


def wrong_state(
    locked: dict[int, tuple[JobState, str | None]], allowed: tuple[JobState, ...], done: str
) -> dict[int, str]:
    """Refusals for the locked jobs whose state does not allow the change."""
    names = " or ".join(state.value for state in allowed)
    return {
        job_id: f"job {job_id} is {state.value}; only {names} jobs can be {done}"
        for job_id, (state, _) in locked.items()
        if state not in allowed
    }


def unique_key_conflicts(
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
    keys = list(candidates.values())
    holders = run(conn, app.schema, unique_key_holders(app.data.sql, keys))
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


def in_order(wanted: list[int], changed: set[int]) -> list[int]:
    """The changed ids, in the order they were asked for."""
    return [job_id for job_id in wanted if job_id in changed]
