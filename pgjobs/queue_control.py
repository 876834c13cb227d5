"""Queue control: what `pgjobs queues` and `pgjobs queue pause|resume|limit` do.

A queue's settings live in `<schema>.queues`, one row per queue that has any; a queue
without a row is running and unlimited, so a new queue needs no declaration. Every
claim reads the paused flag itself, so a pause applies to every worker from its next
claim and survives restarts; a resume also wakes the workers that serve the queue.
Limits are enforced at enqueue (`pgjobs.queue_limits`).
"""

from __future__ import annotations

from pgjobs.app import App
from pgjobs.bounds import INT_MAX  # max_waiting is an integer column
from pgjobs.data.inspect import QueueOverview
from pgjobs.enqueue import MAX_QUEUE_NAME_LENGTH, _check_text
from pgjobs.errors import ConfigurationError

__all__ = ["QueueOverview", "pause_queue", "queue_overview", "resume_queue", "set_queue_limit"]


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


def set_queue_limit(app: App, queue: str, max_waiting: int | None) -> None:
    """Refuse enqueues (`QueueFull`) while `queue` holds `max_waiting` waiting jobs or more;
    None removes the limit. Producers see the change within a second."""
    _check_queue(queue)
    if max_waiting is not None and (
        isinstance(max_waiting, bool)
        or not isinstance(max_waiting, int)
        or not 0 <= max_waiting <= INT_MAX
    ):
        raise ConfigurationError(
            f"max_waiting must be an integer from 0 to {INT_MAX}, got {max_waiting!r}"
        )
    with app.database.transaction() as conn:
        app.data.admin.set_queue_limit(conn, queue, max_waiting)


def _check_queue(queue: str) -> None:
    """The rules of an enqueue's queue name: a queue you can pause is one you can fill."""
    _check_text("queue", queue, max_length=MAX_QUEUE_NAME_LENGTH)
