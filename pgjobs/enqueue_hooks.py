"""The producer's side of hooks: enqueue middleware around the write, then `job_enqueued`.

Every way of enqueueing (`App.enqueue` and `enqueue_many`, their async forms, a
workflow, a step added by a running step) writes its rows through `write` or
`write_async`. With no enqueue middleware and no `job_enqueued` handler they run the
plan and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pgjobs.data.producer import Inserted
from pgjobs.data.steps import Plan
from pgjobs.enqueue import encode_meta
from pgjobs.hooks import Event, Hooks, JobInfo
from pgjobs.types import JobRow

T = TypeVar("T")
# Makes the plan that writes these rows (with their metadata as middleware left it).
PlanOf = Callable[[Sequence[JobRow]], Plan[T]]
# Which ids the plan's result gave the rows, and which rows are new jobs.
InsertedOf = Callable[[T], Inserted]


def write(
    hooks: Hooks,
    rows: Sequence[JobRow],
    plan_of: PlanOf[T],
    inserted_of: InsertedOf[T],
    run: Callable[[Plan[T]], T],
) -> T:
    """Write `rows` by `run(plan_of(rows))`, through the enqueue middleware; then tell
    the `job_enqueued` handlers, in this thread, of each job inserted."""
    if not hooks.producing:
        return run(plan_of(rows))
    jobs = [_job_of(row) for row in rows]
    with hooks.around_enqueue(jobs):
        result = run(plan_of(_with_meta(jobs, rows)))
        events = _written(hooks, jobs, inserted_of(result))
    for event in events:
        hooks.deliver(event)
    return result


async def write_async(
    hooks: Hooks,
    rows: Sequence[JobRow],
    plan_of: PlanOf[T],
    inserted_of: InsertedOf[T],
    run: Callable[[Plan[T]], Awaitable[T]],
) -> T:
    """`write` for async producers: async `job_enqueued` handlers are awaited."""
    if not hooks.producing:
        return await run(plan_of(rows))
    jobs = [_job_of(row) for row in rows]
    with hooks.around_enqueue(jobs):
        result = await run(plan_of(_with_meta(jobs, rows)))
        events = _written(hooks, jobs, inserted_of(result))
    for event in events:
        await hooks.deliver_async(event)
    return result


def same(inserted: Inserted) -> Inserted:
    """The `InsertedOf` of a plan that returns its `Inserted`."""
    return inserted


def all_new(ids: list[int]) -> Inserted:
    """The `Inserted` of a write that inserts every row (a workflow's steps)."""
    return Inserted(ids, [True] * len(ids))


def _job_of(row: JobRow) -> JobInfo:
    """A job about to be enqueued: no id yet, attempt 0."""
    return JobInfo(
        id=None,
        task=row.task,
        queue=row.queue,
        attempt=0,
        args_json=row.payload_json,
        meta_json=row.meta_json,
        priority=row.priority,
        max_attempts=row.max_attempts,
    )


def _with_meta(jobs: list[JobInfo], rows: Sequence[JobRow]) -> list[JobRow]:
    """`rows` with the metadata the enqueue middleware left on their jobs, checked as
    `meta=` is (an `InvalidJobError` writes nothing)."""
    return [
        row._replace(meta_json=encode_meta(row.task, job.meta)) if job.meta_changed else row
        for job, row in zip(jobs, rows, strict=True)
    ]


def _written(hooks: Hooks, jobs: list[JobInfo], inserted: Inserted) -> list[Event]:
    """Give the jobs their ids; the `job_enqueued` events of those that were inserted
    (not those whose unique_key an unfinished job held)."""
    for job, job_id in zip(jobs, inserted.ids, strict=True):
        job.id = job_id
    if not hooks.wants("job_enqueued"):
        return []
    return [Event("job_enqueued", job) for job, new in zip(jobs, inserted.new, strict=True) if new]
