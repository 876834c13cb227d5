"""`pgjobs limits`: every task's concurrency and rate limits, every queue's max_running,
and how much of each is in use.

JSON output (`--json`) is one object: `tasks`, each with its limits and `running` (its
concurrency limit's use, null without one) and `starts` (its rate limit's, null without
one), each `{"total", "buckets", "top": [{"bucket", "key", "count"}]}`; and `queues`,
each `{"queue", "max_running", "running", "updated_at"}`.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pgjobs.cli.common import DatabaseUrlOption, JsonOption, SchemaOption, open_app
from pgjobs.cli.output import format_age, make_table, print_json, print_rich

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from pgjobs.queue_control import Limits, LimitUse, QueueRunningLimit, TaskLimit

# A rate's period as `rate_limit` spells it ("100/m").
_PERIOD_UNITS = {1.0: "s", 60.0: "m", 3600.0: "h"}


def limits(
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every task and queue limit, and how much of each is in use now.

    Tasks' concurrency and rate limits are declared in code and recorded by the workers
    that run them; a queue's max running is set by `pgjobs queue limit`. "in use" is the
    running jobs holding a concurrency limit's slots, or a rate limit's starts in its
    current window; a limit with a key shows its 20 most used values.
    """
    from pgjobs.queue_control import list_limits

    with closing(open_app(database_url, schema)) as app:
        found = list_limits(app)
        schema_name = app.schema
    if as_json:
        print_json(_limits_json(found))
        return
    if not found.tasks and not found.queues:
        print_rich(f"no limits in schema {schema_name!r}")
        return
    now = datetime.now(timezone.utc)
    shown: list[RenderableType] = []
    if found.tasks:
        shown.append(_tasks_table(found.tasks, now))
    if found.queues:
        shown += [""] if shown else []
        shown.append(_queues_table(found.queues, now))
    print_rich(*shown)


def _tasks_table(tasks: list[TaskLimit], now: datetime) -> Table:
    table = make_table("task", "limit", "max", "key", "in use", "updated", right=("in use",))
    for task in tasks:
        updated = f"{format_age(now - task.updated_at)} ago"
        if task.running is not None and task.concurrency is not None:
            most = _per_key(str(task.concurrency), task.concurrency_key)
            _add_use(table, [task.task, "concurrency", most], task.running, updated)
        if task.starts is not None and task.rate_count is not None:
            most = _per_key(_rate(task.rate_count, task.rate_period), task.rate_key)
            _add_use(table, [task.task, "rate", most], task.starts, updated)
    return table


def _add_use(table: Table, limit: list[str], use: LimitUse, updated: str) -> None:
    """One row per bucket in use (the limit's own columns on the first), and one for the
    buckets not shown; a limit that nothing uses has one row."""
    rows = [(_key(bucket.key), bucket.used) for bucket in use.top] or [("-", 0)]
    if use.buckets > len(use.top):
        rest = use.buckets - len(use.top)
        rows.append((f"{rest} more", use.total - sum(bucket.used for bucket in use.top)))
    for index, (key, used) in enumerate(rows):
        first = index == 0
        table.add_row(*(limit if first else ["", "", ""]), key, str(used), updated if first else "")


def _queues_table(queues: list[QueueRunningLimit], now: datetime) -> Table:
    table = make_table(
        "queue", "max running", "running", "updated", right=("max running", "running")
    )
    for queue in queues:
        table.add_row(
            queue.queue,
            str(queue.max_running),
            str(queue.running),
            f"{format_age(now - queue.updated_at)} ago",
        )
    return table


def _key(value: str | None) -> str:
    """A bucket's key value: "-" for a limit without key, `""` for an empty value."""
    return "-" if value is None else value or '""'


def _per_key(most: str, key: str | None) -> str:
    return most if key is None else f"{most} per {key}"


def _rate(count: int, period: float | None) -> str:
    period = period or 0.0
    return f"{count}/{_PERIOD_UNITS.get(period) or f'{period:g}s'}"


def _limits_json(found: Limits) -> dict[str, Any]:
    return {
        "tasks": [
            {
                "task": task.task,
                "concurrency": task.concurrency,
                "concurrency_key": task.concurrency_key,
                "rate_count": task.rate_count,
                "rate_period_seconds": task.rate_period,
                "rate_key": task.rate_key,
                "updated_at": task.updated_at,
                "running": _use_json(task.running),
                "starts": _use_json(task.starts),
            }
            for task in found.tasks
        ],
        "queues": [
            {
                "queue": queue.queue,
                "max_running": queue.max_running,
                "running": queue.running,
                "updated_at": queue.updated_at,
            }
            for queue in found.queues
        ],
    }


def _use_json(use: LimitUse | None) -> dict[str, Any] | None:
    if use is None:
        return None
    return {
        "total": use.total,
        "buckets": use.buckets,
        "top": [
            {"bucket": bucket.bucket, "key": bucket.key, "count": bucket.used} for bucket in use.top
        ],
    }
