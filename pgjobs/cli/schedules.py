"""`pgjobs schedules --app MODULE:ATTR`: each periodic task, its last tick and next run.

JSON output (`--json`) is an array with one object per schedule: `task`, `expression`,
`timezone`, `status` (active, new, changed or gone), `last_tick`, `last_job_id`,
`next_run`, `overdue`, `max_lateness` (seconds) and `args`; timestamps in ISO 8601.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated

from pgjobs.cli.common import (
    DatabaseUrlOption,
    JsonOption,
    SchemaOption,
    app_option,
    load_app,
    require_migrated,
)
from pgjobs.cli.output import format_age, make_table, print_json, print_rich

if TYPE_CHECKING:
    from pgjobs.schedule_status import ScheduleStatus

_STATUS_STYLES = {"new": "yellow", "changed": "yellow", "gone": "dim"}


def schedules(
    app_reference: Annotated[
        str,
        app_option("Your pgjobs.App, as module:attribute: its periodic tasks are listed."),
    ],
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Periodic tasks: schedule, time zone, last enqueued tick and next run.

    Schedules stored by workers that the App no longer declares are listed as gone.
    An overdue next run means no worker has enqueued it yet (none is running, or all
    run with --no-periodic).
    """
    from pgjobs.schedule_status import schedule_statuses

    app = load_app(app_reference)
    app.configure(database_url=database_url, schema=schema)
    with closing(app):
        require_migrated(app)
        now = datetime.now(timezone.utc)
        statuses = schedule_statuses(app, now=now)
        schema_name = app.schema
    if as_json:
        print_json([status.as_dict() for status in statuses])
        return
    _print_table(statuses, now, schema_name)


def _print_table(statuses: list[ScheduleStatus], now: datetime, schema: str) -> None:
    from rich.text import Text

    if not statuses:
        print_rich(f"no periodic tasks in this App, and none stored in schema {schema!r}")
        return
    table = make_table("task", "schedule", "timezone", "last tick", "next run", "status")
    for status in statuses:
        table.add_row(
            status.task,
            status.expression,
            status.timezone,
            _when(status.last_tick, status.timezone, now),
            _when(status.next_run, status.timezone, now, overdue=status.overdue),
            Text(status.status, style=_STATUS_STYLES.get(status.status, "")),
        )
    print_rich(table)


def _when(moment: datetime | None, zone: str, now: datetime, *, overdue: bool = False) -> str:
    """A tick in the schedule's own zone, to the second, with how far it is from now."""
    if moment is None:
        return "-"
    from pgjobs.ticks import UTC, time_zone

    try:
        local = moment.astimezone(time_zone(zone))
    except ValueError:  # a gone schedule's zone this machine does not know
        local = moment.astimezone(UTC)
    shown = local.isoformat(sep=" ", timespec="seconds")
    if moment > now:
        return f"{shown} (in {format_age(moment - now)})"
    return f"{shown} ({format_age(now - moment)} ago{', overdue' if overdue else ''})"
