"""Schedules: each periodic task's schedule, its last and next run; "run now".

Schedules are declared in the App's code (`@app.periodic`); `<schema>.schedules` records
where each stands. A dashboard given the App (its declarations are the dashboard App's
`schedules`) shows what `pgjobs schedules` shows (`pgjobs.schedule_status`). A
dashboard made from a database URL knows only the table: each row's expression, its
last tick and job, and the next tick worked out from the stored expression, as
"stored" (whether the App still declares it cannot be known).

"Run now" enqueues one plain job of the task, to run at once: the schedule's arguments
and the task's queue, priority and attempts (from the declaration; without it, a copy of
the schedule's last job). It is not a tick: it does not move the schedule, so the next
tick still comes when it is due, and it has no `scheduled_at`, so it can never take the
place of a tick's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs.data.dashboard_ops import DashboardOpsStatements, StoredSchedule
from pgjobs.enqueue import JobOptions
from pgjobs.schedule_status import schedule_statuses
from pgjobs.ticks import CronTicks, IntervalTicks, Ticks
from pgjobs.web.dashboard import BadRequest, Dashboard, action, logged, page, redirect


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule as the page shows it; `args` as `redact` lets them be shown, None
    when the App is not known here."""

    task: str
    expression: str
    timezone: str
    status: str  # active, new, changed, gone (pgjobs.schedule_status), or stored
    last_tick: datetime | None
    last_job_id: int | None
    last_job_state: str | None
    next_run: datetime | None
    overdue: bool
    args: Any
    can_run: bool


def routes(dashboard: Dashboard) -> list[Route]:
    return [
        Route("/schedules", page(dashboard, show), name="schedules"),
        Route("/schedules/run", action(dashboard, run_now), methods=["POST"], name="run_schedule"),
    ]


def show(dashboard: Dashboard, request: Request) -> Response:
    statements = DashboardOpsStatements(dashboard.app.data.sql)
    with dashboard.reading() as conn:
        stored = {s.name: s for s in statements.stored_schedules(conn)}
    now = datetime.now(timezone.utc)  # the ticks are worked out here, as the CLI does
    declared = bool(dashboard.app.schedules)
    rows = declared_rows(dashboard, stored, now) if declared else stored_rows(stored, now)
    return dashboard.render(request, "schedules.html", {"schedules": rows, "declared": declared})


def declared_rows(
    dashboard: Dashboard, stored: dict[str, StoredSchedule], now: datetime
) -> list[ScheduleRow]:
    """The App's schedules and the stored ones it no longer declares, as the CLI tells."""
    rows = []
    for status in schedule_statuses(dashboard.app, now=now):
        row = stored.get(status.task)
        rows.append(
            ScheduleRow(
                task=status.task,
                expression=status.expression,
                timezone=status.timezone,
                status=status.status,
                last_tick=status.last_tick,
                last_job_id=status.last_job_id,
                last_job_state=row.last_job_state if row else None,
                next_run=status.next_run,
                overdue=status.overdue,
                args=_shown_args(dashboard, status.task, status.args),
                can_run=status.status != "gone",
            )
        )
    return rows


def _shown_args(dashboard: Dashboard, task: str, args: dict[str, Any] | None) -> Any:
    return None if args is None else dashboard.args_shown(task, args)


def stored_rows(stored: dict[str, StoredSchedule], now: datetime) -> list[ScheduleRow]:
    """What the table alone tells: the next tick after the last one dealt with."""
    rows = []
    for row in stored.values():
        ticks = stored_ticks(row.expression, row.timezone)
        next_run = None if ticks is None else ticks.next_after(row.done_until)
        if next_run is not None and ticks is not None and next_run <= now:
            next_run = ticks.latest(now, after=row.done_until) or next_run
        rows.append(
            ScheduleRow(
                task=row.name,
                expression=row.expression,
                timezone=row.timezone,
                status="stored",
                last_tick=row.last_tick,
                last_job_id=row.last_job_id,
                last_job_state=row.last_job_state,
                next_run=next_run,
                overdue=next_run is not None and next_run <= now,
                args=None,
                can_run=row.last_job_state is not None,
            )
        )
    return rows


def stored_ticks(expression: str, zone: str) -> Ticks | None:
    """The ticks of a stored expression ("every 30s" or cron), None if unreadable."""
    try:
        if expression.startswith("every ") and expression.endswith("s"):
            return IntervalTicks(float(expression[len("every ") : -1]))
        return CronTicks(expression, zone)
    except (ValueError, LookupError):
        return None


def run_now(dashboard: Dashboard, request: Request, form: FormData, who: str) -> Response:
    name = form.get("schedule")
    if not isinstance(name, str) or not name or len(name) > 1000:
        raise BadRequest("say which schedule to run: the form's `schedule` field is missing")
    schedule = dashboard.app.schedules.get(name)
    if schedule is not None:
        job = schedule.job
        task, payload = schedule.name, schedule.args
        options = JobOptions(
            queue=job.queue,
            priority=job.priority,
            max_attempts=job.max_attempts,
            unique_key=job.unique_key,
        )
    else:
        task, payload, options = _copy_of_last_job(dashboard, name)
    job_id = dashboard.app.enqueue(None, task, payload, options=options)
    logged("run schedule now", who, schedule=name, job_id=job_id)
    return redirect(request, "schedules", f"{name}: job {job_id} enqueued to run now")


def _copy_of_last_job(dashboard: Dashboard, name: str) -> tuple[str, Any, JobOptions]:
    """Without the App's declaration, the schedule's last job is what a run looks like."""
    with dashboard.reading() as conn:
        found = DashboardOpsStatements(dashboard.app.data.sql).schedule_template(conn, name)
    if found is None:
        raise BadRequest(f"no schedule called {name!r}", status=404)
    if dashboard.app.schedules:
        raise BadRequest(
            f"the App no longer declares the schedule {name!r}: workers ignore it", status=409
        )
    if found.task is None:
        raise BadRequest(
            f"schedule {name!r} has no job to copy (none yet, or pruned): without the App's "
            "declaration its arguments are unknown; mount the dashboard with create_app(app)",
            status=409,
        )
    options = JobOptions(
        queue=found.queue, priority=found.priority, max_attempts=found.max_attempts
    )
    return found.task, found.payload or {}, options
