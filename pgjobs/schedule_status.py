"""Where each periodic task stands: its schedule, last enqueued tick and next run.

What `pgjobs schedules` prints, from the App's declarations and the schedule rows the
workers keep. A row whose task the App no longer declares is reported as gone: workers
ignore it, and it stays as a record of the schedule's last job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pgjobs.app import App
    from pgjobs.data.schedules import ScheduleState
    from pgjobs.periodic import Schedule

# active: workers enqueue it as declared; new: no worker has registered it yet;
# changed: the row was computed from another expression or zone (workers restart it);
# gone: a stored schedule the App no longer declares.
Status = Literal["active", "new", "changed", "gone"]


@dataclass(frozen=True)
class ScheduleStatus:
    """One periodic task as `pgjobs schedules` shows it.

    `next_run` is the tick the next worker pass will enqueue: in the past when it is
    overdue (no worker has run since it came), None for a gone schedule.
    """

    task: str
    expression: str
    timezone: str
    status: Status
    last_tick: datetime | None
    last_job_id: int | None
    next_run: datetime | None
    overdue: bool  # the next run's time has passed and no worker enqueued it yet
    max_lateness: timedelta | None
    args: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON output."""
        return dict(vars(self))


def schedule_statuses(app: App, *, now: datetime | None = None) -> list[ScheduleStatus]:
    """Every periodic task of `app` and every stored schedule, by task name."""
    with app.database.transaction() as conn:
        states = app.data.schedules.schedule_states(conn)
    moment = now or datetime.now(timezone.utc)
    names = sorted(set(app.schedules) | set(states))
    return [_status(app.schedules.get(name), states.get(name), name, moment) for name in names]


def _status(
    schedule: Schedule | None, state: ScheduleState | None, name: str, now: datetime
) -> ScheduleStatus:
    last_tick = state.last_tick if state else None
    last_job_id = state.last_job_id if state else None
    if schedule is None:
        assert state is not None
        return ScheduleStatus(
            task=name,
            expression=state.expression,
            timezone=state.timezone,
            status="gone",
            last_tick=last_tick,
            last_job_id=last_job_id,
            next_run=None,
            overdue=False,
            max_lateness=None,
            args=None,
        )
    ticks = schedule.ticks
    status: Status
    if state is None:
        status, next_run = "new", ticks.next_after(now)
    elif (state.expression, state.timezone) != (ticks.expression, ticks.timezone):
        status, next_run = "changed", ticks.next_after(now)
    else:
        status, next_run = "active", ticks.next_after(state.done_until)
        if next_run is not None and next_run <= now:
            next_run = ticks.latest(now, after=state.done_until)
    return ScheduleStatus(
        task=name,
        expression=ticks.expression,
        timezone=ticks.timezone,
        status=status,
        last_tick=last_tick,
        last_job_id=last_job_id,
        next_run=next_run,
        overdue=next_run is not None and next_run <= now,
        max_lateness=schedule.max_lateness,
        args=schedule.args,
    )
