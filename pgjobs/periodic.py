"""Periodic tasks: what `@app.periodic(...)` declares, checked completely at import.

A `Schedule` ties a registered task to its ticks (`pgjobs.ticks`), the arguments each of
its jobs gets and how late a tick may still be enqueued. Workers enqueue the ticks
(`pgjobs.worker.periodic`); nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgjobs.bounds import MAX_DELAY_SECONDS, check_seconds
from pgjobs.enqueue import build_row
from pgjobs.errors import InvalidScheduleError, PgJobsError
from pgjobs.tasks import Task
from pgjobs.ticks import CronTicks, IntervalTicks, Ticks
from pgjobs.types import JobRow


@dataclass(frozen=True)
class Schedule:
    """A periodic task: when it is due, the job each tick enqueues, how late it may be.

    `max_lateness` None means the latest due tick is enqueued however late it is (after
    an outage, at most one: the most recent).
    """

    task: Task[Any, Any]
    ticks: Ticks
    args: dict[str, Any]
    job: JobRow  # the task's defaults and `args`, validated; run_at is the tick
    max_lateness: timedelta | None

    @property
    def name(self) -> str:
        """The schedule's key in `<schema>.schedules`: its task's name."""
        return self.task.name

    def too_late(self, tick: datetime, now: datetime) -> bool:
        """Whether `tick` is past `max_lateness` at `now`, and so is skipped."""
        return self.max_lateness is not None and now - tick > self.max_lateness


def declare_schedule(
    task: object,
    *,
    cron: str | None,
    every: float | timedelta | None,
    timezone: str,
    args: Mapping[str, Any] | None,
    max_lateness: float | timedelta | None,
) -> Schedule:
    """Check a periodic declaration; `InvalidScheduleError` names the task and the fault."""
    if not isinstance(task, Task):
        raise InvalidScheduleError(
            f"@app.periodic must be stacked above @app.task, got {task!r}: "
            "write @app.periodic(...) on the line above @app.task"
        )
    where = f"periodic task {task.name!r}"
    try:
        ticks = _ticks(cron, every, timezone)
        lateness = _max_lateness(max_lateness)
        if args is not None and not isinstance(args, Mapping):
            raise ValueError(f"args must be a mapping of argument names, got {args!r}")
        payload = dict(args or {})
        task.check_arguments(payload)
        job = build_row(task.name, payload, task.defaults)
    except (ValueError, PgJobsError) as error:
        raise InvalidScheduleError(f"{where}: {error}") from None
    return Schedule(task=task, ticks=ticks, args=payload, job=job, max_lateness=lateness)


def add_schedule(
    schedule: Schedule, schedules: dict[str, Schedule], tasks: Mapping[str, object]
) -> None:
    """Add a declared schedule to an App's (`schedules`, by task name), whose `tasks`
    must hold its task: a task has one schedule."""
    if schedule.name in schedules:
        raise InvalidScheduleError(
            f"periodic task {schedule.name!r} already has a schedule; a task has one"
        )
    if tasks.get(schedule.name) is not schedule.task:
        raise InvalidScheduleError(f"periodic task {schedule.name!r} is not a task of this App")
    schedules[schedule.name] = schedule


def _ticks(cron: str | None, every: float | timedelta | None, timezone: str) -> Ticks:
    if (cron is None) == (every is None):
        given = "both" if cron is not None else "neither"
        raise ValueError(f"give exactly one of cron= and every= ({given} given)")
    if cron is not None:
        return CronTicks(cron, timezone)
    if timezone != "UTC":
        raise ValueError(
            "timezone applies to cron schedules only; an every= interval ticks on "
            "multiples of itself since 1970-01-01 UTC (use cron for local times)"
        )
    assert every is not None
    return IntervalTicks(every)


def _max_lateness(value: float | timedelta | None) -> timedelta | None:
    if value is None:
        return None
    seconds = check_seconds("max_lateness", value, exclusive=True, maximum=MAX_DELAY_SECONDS)
    return timedelta(seconds=seconds)
