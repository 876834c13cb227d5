"""Queue control: what `pgjobs queues`, `pgjobs queue pause|resume|limit` and `pgjobs
limits` do.

A queue's settings live in `<schema>.queues`, one row per queue that has any; a queue
without a row is running and unlimited, so a new queue needs no declaration. Every
claim reads the paused flag itself, so a pause applies to every worker from its next
claim and survives restarts; a resume also wakes the workers that serve the queue.
`max_waiting` is enforced at enqueue (`pgjobs.queue_limits`), `max_running` at claim,
like the tasks' concurrency and rate limits (`<schema>.task_limits`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from pgjobs.app import App
from pgjobs.bounds import INT_MAX  # the limits are integer columns
from pgjobs.data.inspect import (
    BucketUse,
    LimitUse,
    QueueOverview,
    QueueRunningLimit,
    TaskLimit,
)
from pgjobs.enqueue import MAX_QUEUE_NAME_LENGTH, _check_text
from pgjobs.errors import ConfigurationError

__all__ = [
    "UNCHANGED",
    "BucketUse",
    "LimitUse",
    "Limits",
    "QueueOverview",
    "QueueRunningLimit",
    "TaskLimit",
    "list_limits",
    "pause_queue",
    "queue_overview",
    "resume_queue",
    "set_queue_limit",
]

# The buckets of each task limit `list_limits` shows by default, the most used first.
TOP_BUCKETS = 20


class _Unchanged(enum.Enum):
    UNCHANGED = "UNCHANGED"

    def __repr__(self) -> str:
        return "UNCHANGED"


# `set_queue_limit`'s default: leave that limit as it is.
UNCHANGED: Final = _Unchanged.UNCHANGED
# A limit given to `set_queue_limit`: a number, None (no limit) or UNCHANGED.
Setting = int | Literal[_Unchanged.UNCHANGED] | None


@dataclass(frozen=True)
class Limits:
    """What `pgjobs limits` shows: every task's limits and every queue's max_running,
    each with its current use."""

    tasks: list[TaskLimit]
    queues: list[QueueRunningLimit]


def queue_overview(app: App) -> list[QueueOverview]:
    """Every queue that has jobs or settings: counts by state, oldest waiting age, paused
    and limit, by name."""
    with app.database.transaction() as conn:
        return app.data.inspect.queue_overview(conn)


def pause_queue(app: App, queue: str) -> None:
    """Stop every worker from claiming jobs of `queue`; enqueueing into it still works.

    Jobs already claimed (running, or claimed ahead by a worker) finish as usual.
    """
    _check_queue(queue)
    with app.database.transaction() as conn:
        app.data.admin.pause_queue(conn, queue)


def resume_queue(app: App, queue: str) -> bool:
    """Let workers claim from `queue` again, and wake those that serve it; False when it
    was not paused (nothing is changed, and a queue never seen is not recorded)."""
    _check_queue(queue)
    with app.database.transaction() as conn:
        return app.data.admin.resume_queue(conn, queue)


def set_queue_limit(
    app: App,
    queue: str,
    max_waiting: Setting = UNCHANGED,
    *,
    max_running: Setting = UNCHANGED,
) -> None:
    """Set the limits of `queue` that are given; None removes one, and one not given
    (`UNCHANGED`) stays as it is.

    `max_waiting`: refuse enqueues (`QueueFull`) while the queue holds that many waiting
    jobs or more; producers see the change within a second. `max_running`: workers claim
    none of its jobs while that many run, across the fleet; they see the change within a
    second, and it wakes them.
    """
    _check_queue(queue)
    limits: dict[str, int | None] = {}
    for name, value, minimum in (
        ("max_waiting", max_waiting, 0),
        ("max_running", max_running, 1),
    ):
        if value is UNCHANGED:
            continue
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= INT_MAX
        ):
            raise ConfigurationError(
                f"{name} must be an integer from {minimum} to {INT_MAX}, got {value!r}"
            )
        limits[name] = value
    if not limits:
        raise ConfigurationError("give max_waiting, max_running or both")
    with app.database.transaction() as conn:
        app.data.admin.set_queue_limit(conn, queue, limits)


def list_limits(app: App, *, top: int = TOP_BUCKETS) -> Limits:
    """Every task's concurrency and rate limits (`task_limits`) and every queue's
    max_running, with their use now: the running jobs of each concurrency bucket, the
    starts of each rate bucket in its current window (the `top` most used buckets of
    each limit, and how many are in use), the running jobs of each limited queue."""
    with app.database.transaction() as conn:
        tasks = app.data.inspect.task_limits(conn, top=top)
        queues = app.data.inspect.queue_running_limits(conn)
    return Limits(tasks, queues)


def _check_queue(queue: str) -> None:
    """The rules of an enqueue's queue name: a queue you can pause is one you can fill."""
    _check_text("queue", queue, max_length=MAX_QUEUE_NAME_LENGTH)
