"""Periodic jobs' statements: the schedules' stored state and the enqueue of a tick.

`<schema>.schedules` holds one row per periodic task; the row and the tick's job move
together in one statement, so a tick is enqueued once however many workers race for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgjobs.data.group import StatementGroup
from pgjobs.types import JobRow

# A schedule as the statements take it: (name, expression, timezone).
Schedule = tuple[str, str, str]


@dataclass(frozen=True)
class ScheduleState:
    """A row of `<schema>.schedules`: a periodic task's state as workers left it.

    Ticks up to `done_until` are dealt with (enqueued, skipped as too late, or passed
    before the schedule was seen); `last_tick` is the newest one that enqueued a job.
    """

    name: str
    expression: str
    timezone: str
    done_until: datetime
    last_tick: datetime | None
    last_job_id: int | None
    updated_at: datetime


SCHEDULE_STATES = """
SELECT name, expression, timezone, done_until, last_tick, last_job_id, updated_at
FROM {schedules}
WHERE %(names)s::text[] IS NULL OR name = ANY(%(names)s::text[])
ORDER BY name
"""

# A schedule seen for the first time starts at `done_until` (the worker's now): no tick
# before it is ever enqueued, so a new schedule does not fire at once for a time that
# passed before it existed. A row that exists is left alone: during a rolling deploy two
# versions of an app may declare one task with different schedules, and neither may
# reset the other's progress (worker/periodic.py).
REGISTER_SCHEDULES = """
INSERT INTO {schedules} (name, expression, timezone, done_until)
SELECT i.name, i.expression, i.timezone, %(done_until)s
FROM unnest(%(names)s::text[], %(expressions)s::text[], %(timezones)s::text[])
    AS i(name, expression, timezone)
ON CONFLICT (name) DO NOTHING
"""

# `pgjobs.testing`'s clock: a schedule whose row says otherwise starts afresh at
# `done_until`, as if a worker of this app had been running all along.
RESET_SCHEDULES = """
INSERT INTO {schedules} AS s (name, expression, timezone, done_until)
SELECT i.name, i.expression, i.timezone, %(done_until)s
FROM unnest(%(names)s::text[], %(expressions)s::text[], %(timezones)s::text[])
    AS i(name, expression, timezone)
ON CONFLICT (name) DO UPDATE
SET expression = excluded.expression, timezone = excluded.timezone,
    done_until = excluded.done_until, updated_at = now()
WHERE (s.expression, s.timezone) IS DISTINCT FROM (excluded.expression, excluded.timezone)
"""

# Enqueues one tick, at most once however many workers run it at the same moment: the
# schedule row is locked and must still be behind the tick (a worker that waited for the
# lock re-reads the row, finds it moved on and does nothing), the job is inserted and the
# row moved forward in the same statement. The unique (task, scheduled_at) index is the
# last word: a second job for one tick cannot exist. With `enqueue` false (a tick too
# late to run) only the row moves. `done_until` is a time, whatever schedule moved it:
# workers whose apps declare the task with different schedules (a rolling deploy) each
# enqueue their own ticks past it, and a tick both declare gets one job. The row keeps
# the schedule of the worker that moved it last.
ENQUEUE_TICK = """
WITH due AS (
    SELECT name FROM {schedules}
    WHERE name = %(name)s AND done_until < %(tick)s
    FOR UPDATE
), enqueued AS (
    INSERT INTO {live} (queue, task, payload, priority, run_at, max_attempts, scheduled_at)
    SELECT %(queue)s, %(task)s, %(payload)s::jsonb, %(priority)s, %(tick)s,
           %(max_attempts)s, %(tick)s
    FROM due
    WHERE %(enqueue)s
    ON CONFLICT (task, scheduled_at) WHERE scheduled_at IS NOT NULL DO NOTHING
    RETURNING id
)
UPDATE {schedules} AS s
SET done_until = %(tick)s, expression = %(expression)s, timezone = %(timezone)s,
    last_tick = CASE WHEN %(enqueue)s THEN %(tick)s ELSE s.last_tick END,
    last_job_id = coalesce((SELECT id FROM enqueued), s.last_job_id),
    updated_at = now()
FROM due
WHERE s.name = due.name
RETURNING (SELECT id FROM enqueued)
"""


class ScheduleStatements(StatementGroup):
    """The schedules' statements of one schema, on a given connection."""

    def schedule_states(
        self, conn: Any, names: Sequence[str] | None = None
    ) -> dict[str, ScheduleState]:
        """The stored state of the schedules called `names` (every one when None)."""
        params = {"names": None if names is None else list(names)}
        found = self._rows(conn, SCHEDULE_STATES, params, named=True).dicts()
        return {row["name"]: ScheduleState(**row) for row in found}

    def register_schedules(
        self, conn: Any, schedules: Sequence[Schedule], *, done_until: datetime
    ) -> None:
        """Create the rows of schedules that have none: no tick up to `done_until` will
        be enqueued for them."""
        self._rows(conn, REGISTER_SCHEDULES, _schedule_params(schedules, done_until))

    def reset_schedules(
        self, conn: Any, schedules: Sequence[Schedule], *, done_until: datetime
    ) -> None:
        """Create, or restart after a change, schedules: no tick up to `done_until` will
        be enqueued for them."""
        self._rows(conn, RESET_SCHEDULES, _schedule_params(schedules, done_until))

    def enqueue_tick(
        self, conn: Any, *, schedule: Schedule, tick: datetime, job: JobRow, enqueue: bool
    ) -> tuple[bool, int | None]:
        """Move the schedule forward to `tick` and insert `job` for it (unless `enqueue`
        is false: the tick is skipped), unless another worker got there first; (moved,
        new job id)."""
        name, expression, timezone = schedule
        params = {
            "name": name,
            "expression": expression,
            "timezone": timezone,
            "tick": tick,
            "enqueue": enqueue,
            "task": job.task,
            "queue": job.queue,
            "payload": job.payload_json,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
        }
        moved = self._rows(conn, ENQUEUE_TICK, params)
        return (bool(moved), moved[0][0] if moved else None)


def _schedule_params(schedules: Sequence[Schedule], done_until: datetime) -> dict[str, Any]:
    return {
        "names": [name for name, _, _ in schedules],
        "expressions": [expression for _, expression, _ in schedules],
        "timezones": [zone for _, _, zone in schedules],
        "done_until": done_until,
    }
