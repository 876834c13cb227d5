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
from pgjobs.data.admin import StepRetry
from pgjobs.data.connector import run
from pgjobs.data.producer import unique_key_holders
from pgjobs.errors import ConfigurationError, JobNotFoundError
from pgjobs.types import CANCELLABLE_STATES, RETRYABLE_STATES, STATES, JobState

# A workflow step's dependency in one of these has not finished: the step waits for it.
UNFINISHED_STEP_STATES = CANCELLABLE_STATES  # available, running, blocked


def check_states(states: Iterable[str]) -> None:
    """Raise `ConfigurationError` naming the first value that is not a job state."""
    for state in states:
        if state not in STATES:
            names = ", ".join(s.value for s in STATES)
            raise ConfigurationError(f"unknown state {state!r}; choose from {names}")


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
    names = describe_states(allowed)
    return {
        job_id: f"job {job_id} is {state.value}; only {names} jobs can be {done}"
        for job_id, (state, _) in locked.items()
        if state not in allowed
    }


def describe_states(states: Collection[str]) -> str:
    """E.g. "failed or cancelled", "available, running or blocked"."""
    names = [str(state) for state in states]
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


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


def plan_retry(
    conn: psycopg.Connection[Any], app: App, wanted: list[int], *, all_or_nothing: bool
) -> tuple[StepRetry, dict[int, str]]:
    """How the workflow steps among `wanted` (locked, failed or cancelled) are retried,
    and the refusals: a step whose dependency failed or was cancelled, and is not
    retried with it, may not run unless it runs whatever its dependencies' outcome
    (`run_if="finished"`): its dependency must be retried first.

    A retried step waits (`blocked`) for its unfinished dependencies, those retried with
    it included; a dependency that retention already deleted had finished and counts as
    such. With `all_or_nothing` the first refusals are returned at once; otherwise a
    refused step leaves the retry, and the steps that depended on its retry are
    checked again (a bulk retry's batch).
    """
    steps, dependencies = app.data.admin.steps_to_retry(conn, wanted)
    if not steps:
        return StepRetry(), {}
    retried = set(wanted)
    problems: dict[int, str] = {}
    while True:
        refused = {}
        for step in steps.values():
            broken = [
                dependencies[d]
                for d in step.depends_on
                if d not in retried
                and d in dependencies
                and dependencies[d].state in RETRYABLE_STATES
            ]
            if step.id in retried and broken and step.run_if == "completed":
                first = broken[0]
                refused[step.id] = (
                    f"job {step.id} (step {step.step!r}) cannot be retried: its dependency "
                    f"{first.step!r} (job {first.id}) is {first.state.value}; "
                    f"retry step {first.step!r} first"
                )
        problems.update(refused)
        retried -= refused.keys()
        if not refused or all_or_nothing:
            break
    retry = StepRetry()
    for step in steps.values():
        if step.id not in retried:
            continue
        unfinished = [
            d
            for d in step.depends_on
            if d in retried
            or (d in dependencies and dependencies[d].state in UNFINISHED_STEP_STATES)
        ]
        retry.waiting[step.id] = len(unfinished)
        retry.links.extend((d, step.id) for d in unfinished)
        if step.workflow_id not in retry.workflows:
            retry.workflows.append(step.workflow_id)
    return retry, problems


def in_order(wanted: list[int], changed: set[int]) -> list[int]:
    """The changed ids, in the order they were asked for."""
    return [job_id for job_id in wanted if job_id in changed]
