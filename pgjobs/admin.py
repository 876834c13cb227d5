"""Inspecting and managing jobs: what `pgjobs stats/list/show/retry/cancel/prune` do.

The functions take an App, so applications can call them as the CLI does. Retry and
cancel are all or nothing: they lock and check every requested job first, and change
none of them unless all of them can be changed. Workflow steps are settled as a worker
settles them (see `cancel_jobs`, `retry_jobs`, `prune_jobs`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from pgjobs import history
from pgjobs.app import App
from pgjobs.bounds import check_bigint, check_seconds
from pgjobs.data.connector import run
from pgjobs.data.inspect import QueueStats
from pgjobs.data.maintenance import PRUNE_START, PruneCursor
from pgjobs.data.workflows import WorkflowGraph, steps_by_id, workflow_graph
from pgjobs.db import connect
from pgjobs.errors import ConfigurationError, JobNotFoundError, JobStateError, PgJobsError
from pgjobs.job_checks import (
    check_states,
    describe_states,
    distinct,
    in_bigint_range,
    in_order,
    lock_for_change,
    plan_retry,
    unique_key_conflicts,
    wrong_state,
)
from pgjobs.types import CANCELLABLE_STATES, FINISHED_STATES, RETRYABLE_STATES, Job, JobState

PRUNE_BATCH_SIZE = 10_000
# Jobs changed per transaction by a bulk retry or cancel: each batch's row locks last
# milliseconds, however many jobs match.
BULK_BATCH_SIZE = 1_000

__all__ = [
    "BulkChange",
    "JobFilter",
    "QueueStats",
    "Selection",
    "cancel_jobs",
    "cancel_matching",
    "cancel_workflow",
    "change_selected",
    "check_states",
    "get_dependencies",
    "get_job",
    "get_workflow",
    "list_jobs",
    "prune_jobs",
    "queue_stats",
    "retry_jobs",
    "retry_matching",
    "select_jobs",
]


def queue_stats(app: App) -> list[QueueStats]:
    """Statistics of every queue that has jobs, by queue name, in one statement."""
    with app.database.transaction() as conn:
        return app.data.inspect.queue_stats(conn)


def list_jobs(
    app: App,
    *,
    states: Collection[str] = (),
    queues: Collection[str] = (),
    tasks: Collection[str] = (),
    limit: int = 50,
    workflow_id: int | None = None,
) -> list[Job]:
    """The newest `limit` jobs matching every given filter (an empty filter matches all;
    `workflow_id` keeps the steps of one workflow)."""
    check_states(states)
    check_bigint("limit", limit, error=ConfigurationError)
    if workflow_id is not None and not in_bigint_range(workflow_id):
        return []
    with app.database.transaction() as conn:
        return app.data.inspect.list_jobs(
            conn,
            states=[str(state) for state in states] or None,
            queues=list(queues) or None,
            tasks=list(tasks) or None,
            limit=limit,
            workflow_id=workflow_id,
        )


def get_job(app: App, job_id: int) -> Job:
    """One job, with `errors` holding its attempt history."""
    if in_bigint_range(job_id):
        with app.database.transaction() as conn:
            job = app.data.inspect.get_job(conn, job_id)
        if job is not None:
            return job
    raise JobNotFoundError(f"no job with id {job_id}")


def get_workflow(app: App, workflow_id: int) -> WorkflowGraph:
    """A workflow with its steps, in the order they were added (JobNotFoundError when
    there is no such workflow)."""
    graph = None
    if in_bigint_range(workflow_id):
        with app.database.transaction() as conn:
            graph = run(conn, app.schema, workflow_graph(app.data.sql, workflow_id))
    if graph is None:
        raise JobNotFoundError(f"no workflow with id {workflow_id}")
    return graph


def get_dependencies(app: App, job: Job) -> dict[int, tuple[str, str]]:
    """{id: (step name, state)} of a step's dependencies (those retention left)."""
    if not job.depends_on:
        return {}
    with app.database.transaction() as conn:
        return run(conn, app.schema, steps_by_id(app.data.sql, job.depends_on))


def retry_jobs(app: App, ids: Iterable[int]) -> list[int]:
    """Put failed or cancelled jobs back in their queue to run now; returns their ids.

    A job that ran out of attempts gets one more. Waiting workers are woken. A workflow
    step waits (`blocked`) for its unfinished dependencies and is refused while one is
    failed or cancelled (`job_checks.plan_retry`); blocked steps that depend on it wait
    for it again, cancelled ones stay cancelled. Raises `JobNotFoundError` or
    `JobStateError` and changes nothing when any id is unknown, in another state, would
    take a `unique_key` that an unfinished job holds, or is refused so.
    """

    def retry(conn: psycopg.Connection[Any], wanted: list[int]) -> set[int]:
        steps, problems = plan_retry(conn, app, wanted, all_or_nothing=True)
        if problems:
            raise JobStateError(problems)
        try:
            return app.data.admin.retry_jobs(conn, wanted, steps)
        except psycopg.errors.UniqueViolation:
            # A producer enqueued a job with the same unique_key after the check.
            raise JobStateError(
                {job_id: f"job {job_id}'s unique_key was taken meanwhile" for job_id in wanted}
            ) from None

    return _change_by_id(app, ids, RETRYABLE_STATES, "retried", retry, check_unique_keys=True)


def cancel_jobs(app: App, ids: Iterable[int]) -> list[int]:
    """Cancel waiting, blocked or running jobs; returns their ids.

    A running job's worker is told at once (a notification on commit, the heartbeat as a
    backstop): its task's stop flag is set and its result is dropped. A workflow step's
    dependents are cancelled with it, and theirs, down the graph (those added with
    `run_if="finished"` are released instead), in the same transaction.
    Raises `JobNotFoundError` or `JobStateError` and changes nothing when any id is
    unknown or already finished.
    """
    return _change_by_id(app, ids, CANCELLABLE_STATES, "cancelled", app.data.admin.cancel_jobs)


def cancel_workflow(app: App, workflow_id: int) -> list[int]:
    """Cancel every unfinished step (available, blocked or running) of a workflow, in
    one transaction; returns their ids (none when every step had finished).

    Raises `JobNotFoundError` when there is no such workflow.
    """
    with app.database.transaction() as conn:
        locked = None
        if in_bigint_range(workflow_id):
            locked = app.data.admin.lock_workflow(conn, workflow_id)
        if locked is None:
            raise JobNotFoundError(f"no workflow with id {workflow_id}")
        changed = app.data.admin.cancel_jobs(conn, locked) if locked else set()
    return in_order(locked, changed)


def _change_by_id(
    app: App,
    ids: Iterable[int],
    allowed: tuple[JobState, ...],
    verb: str,
    change: Callable[[psycopg.Connection[Any], list[int]], set[int]],
    *,
    check_unique_keys: bool = False,
) -> list[int]:
    """Lock the jobs, refuse the whole change if any is unknown or in a state not
    `allowed` (or, when checked, would take a held unique_key), else `change` them all."""
    wanted = distinct(ids)
    if not wanted:
        return []
    with app.database.transaction() as conn:
        locked = lock_for_change(conn, app, wanted)
        problems = wrong_state(locked, allowed, verb)
        if check_unique_keys:
            problems.update(unique_key_conflicts(conn, app, locked, problems))
        if problems:
            raise JobStateError(problems)
        changed = change(conn, wanted)
    return in_order(wanted, changed)


def prune_jobs(
    app: App,
    older_than_seconds: float,
    states: Collection[str] = FINISHED_STATES,
    *,
    batch_size: int = PRUNE_BATCH_SIZE,
) -> int:
    """Delete jobs in `states` that finished more than `older_than_seconds` ago.

    The history's partitions wholly past the cutoff are dropped (pgjobs/history.py); the
    rest (a partition's day that straddles the cutoff, finished rows not yet moved out
    of jobs_live) is deleted `batch_size` rows per transaction, so a large prune never
    holds a long lock or one huge transaction. A workflow's steps are kept until all its
    steps are finished, and the workflow goes with its last step. Returns how many jobs
    were deleted.
    """
    check_states(states)
    unfinished = [state for state in states if state not in FINISHED_STATES]
    if unfinished or not states:
        raise ConfigurationError(
            "only finished jobs can be pruned; choose states from "
            + ", ".join(s.value for s in FINISHED_STATES)
        )
    older_than = check_seconds("older_than", older_than_seconds, error=ConfigurationError)
    names = [str(state) for state in states]
    with connect(app.database.url, autocommit=True) as conn:
        dropped = history.drop_expired(conn, app.data.history, dict.fromkeys(names, older_than))
    deleted = sum(dropped.values())
    cursor: PruneCursor | None = PRUNE_START
    while cursor is not None:
        with app.database.transaction() as conn:
            batch, cursor = app.data.maintenance.prune_next(
                conn,
                states=names,
                older_than_seconds=older_than,
                batch_size=batch_size,
                cursor=cursor,
            )
        deleted += batch
    return deleted


# --- bulk retry and cancel by filter ---------------------------------------------------

BulkAction = Literal["retry", "cancel"]
_ALLOWED: dict[BulkAction, tuple[JobState, ...]] = {
    "retry": RETRYABLE_STATES,
    "cancel": CANCELLABLE_STATES,
}


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a bulk retry or cancel applies to; an empty field matches any job.

    `states` defaults to every state the change applies to (failed and cancelled for a
    retry, available, running and blocked for a cancel); `older_than_seconds` keeps jobs
    enqueued (`created_at`) longer ago than that.
    """

    states: Collection[str] = ()
    queues: Collection[str] = ()
    tasks: Collection[str] = ()
    older_than_seconds: float | None = None


@dataclass(frozen=True)
class Selection:
    """The jobs a bulk change will apply to: `count` of them matched, none past `up_to_id`
    (jobs enqueued after the selection are left alone)."""

    action: BulkAction
    matching: dict[str, Any]
    count: int
    up_to_id: int

    @property
    def states(self) -> list[str]:
        """The states the change applies to (the filter's, or all it can change)."""
        return list(self.matching["states"])


@dataclass(frozen=True)
class BulkChange:
    """What a bulk change did: jobs changed, and jobs that matched but were left as they
    were (a retry that would give a `unique_key` a second unfinished job, or a job that
    moved on meanwhile)."""

    changed: int
    skipped: int


def select_jobs(app: App, action: BulkAction, job_filter: JobFilter) -> Selection:
    """Count the jobs that `action` ("retry" or "cancel") would change under `job_filter`."""
    matching = _matching(action, job_filter)
    with app.database.transaction() as conn:
        count, up_to_id = app.data.admin.count_matching(conn, matching)
    return Selection(action, matching, count, up_to_id)


def change_selected(
    app: App, selection: Selection, *, batch_size: int = BULK_BATCH_SIZE
) -> BulkChange:
    """Retry or cancel the selected jobs, `batch_size` per transaction, in id order.

    Each batch locks its rows, checks them again and changes them like `retry_jobs` or
    `cancel_jobs` (waking workers, telling the workers of cancelled running jobs,
    settling workflow steps), so a million jobs never hold one long lock. A workflow
    step that `retry_jobs` would refuse is left as it is (skipped).
    """
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
    change = _retry_batch if selection.action == "retry" else _cancel_batch
    changed = skipped = 0
    after_id = 0
    while after_id < selection.up_to_id:
        with app.database.transaction() as conn:
            locked = app.data.admin.lock_matching(
                conn,
                selection.matching,
                after_id=after_id,
                up_to_id=selection.up_to_id,
                batch_size=batch_size,
            )
            if not locked:
                break
            try:
                done = change(app, conn, locked)
            except psycopg.errors.UniqueViolation:
                raise PgJobsError(
                    f"a unique_key was taken by a new job during the retry; {changed} jobs "
                    "were retried before that batch: run the command again for the rest"
                ) from None
        changed += len(done)
        skipped += len(locked) - len(done)
        after_id = max(locked)
    return BulkChange(changed, skipped)


def retry_matching(
    app: App, job_filter: JobFilter, *, batch_size: int = BULK_BATCH_SIZE
) -> BulkChange:
    """Retry every failed or cancelled job that matches `job_filter`, in batches (a step
    whose dependency stays failed or cancelled is skipped)."""
    return change_selected(app, select_jobs(app, "retry", job_filter), batch_size=batch_size)


def cancel_matching(
    app: App, job_filter: JobFilter, *, batch_size: int = BULK_BATCH_SIZE
) -> BulkChange:
    """Cancel every waiting, blocked or running job that matches `job_filter`, in
    batches."""
    return change_selected(app, select_jobs(app, "cancel", job_filter), batch_size=batch_size)


def _matching(action: BulkAction, job_filter: JobFilter) -> dict[str, Any]:
    """The filter as statement parameters, refusing states the action cannot change."""
    allowed = _ALLOWED[action]
    check_states(job_filter.states)
    refused = [state for state in job_filter.states if state not in allowed]
    if refused:
        raise ConfigurationError(
            f"{action} applies to {describe_states(allowed)} jobs, "
            f"not {', '.join(map(str, refused))}"
        )
    older_than = job_filter.older_than_seconds
    if older_than is not None:
        older_than = check_seconds("older_than", older_than, error=ConfigurationError)
    return {
        "states": [str(state) for state in (job_filter.states or allowed)],
        "queues": list(job_filter.queues) or None,
        "tasks": list(job_filter.tasks) or None,
        "older_than": older_than,
    }


def _retry_batch(
    app: App, conn: psycopg.Connection[Any], locked: dict[int, tuple[JobState, str | None]]
) -> set[int]:
    refused = unique_key_conflicts(conn, app, locked, ())
    wanted = [job_id for job_id in locked if job_id not in refused]
    if not wanted:
        return set()
    steps, broken = plan_retry(conn, app, wanted, all_or_nothing=False)
    wanted = [job_id for job_id in wanted if job_id not in broken]
    return app.data.admin.retry_jobs(conn, wanted, steps) if wanted else set()


def _cancel_batch(
    app: App, conn: psycopg.Connection[Any], locked: dict[int, tuple[JobState, str | None]]
) -> set[int]:
    return app.data.admin.cancel_jobs(conn, list(locked))
