"""The periodic enqueuer: turns the App's schedules into jobs, one per tick.

It is maintenance: only the leader runs it (`worker/maintenance.py`). The state lives in
the schedule rows, so a restart or a new leader loses nothing and hands nothing over.
Enqueueing a tick moves the schedule row forward and inserts the job in one statement,
under the row's lock, and a unique index forbids a second job for a tick: guards for the
beat in which two workers may both think they lead. After a gap only the latest due
tick is enqueued: a fleet that comes back after a night away enqueues one nightly job,
not a flood.

A rolling deploy may run two versions of an app side by side that give one task
different schedules; the leader's schedules apply meanwhile, whichever version it runs.
The row's `done_until` is a time, not a position in one schedule: when leadership passes
to a worker of the other version, it enqueues the ticks of its own schedule past it, so
a tick the two schedules share gets exactly one job. A leader that first finds the row
written by another schedule enqueues none of its own ticks from before it started, as
for a new schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

import psycopg

from pgjobs.data.schedules import ScheduleState, ScheduleStatements
from pgjobs.periodic import Schedule
from pgjobs.worker.connection import Connections
from pgjobs.worker.service import StatementService

log = logging.getLogger("pgjobs.worker")

# The longest sleep between passes; the enqueuer otherwise wakes at the next tick.
PERIODIC_INTERVAL = 1.0
# Waking a hair after a tick, not a hair before it, spares an empty pass.
_AFTER_TICK = 0.002


def utc_now() -> datetime:
    """The worker's clock, aware and in UTC."""
    return datetime.now(timezone.utc)


class Tick(NamedTuple):
    """What one pass did for one due schedule: enqueued `job_id`, or skipped the tick.

    `job_id` is None when the tick was too late (`max_lateness`) or another worker
    enqueued it; `missed` is True when earlier ticks since the last one were passed over.
    """

    schedule: str
    tick: datetime
    job_id: int | None
    missed: bool


class PeriodicEnqueuer(StatementService[ScheduleStatements]):
    """Enqueues the due ticks of `schedules`, waking at each next tick."""

    def __init__(
        self,
        connection: Connections,
        statements: ScheduleStatements,
        schedules: Sequence[Schedule],
        *,
        interval: float = PERIODIC_INTERVAL,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__("periodic", interval, connection, statements)
        self.schedules = list(schedules)
        self.clock = clock
        # The `now` of the last pass: every tick up to it has been looked at.
        self._covered_until: datetime | None = None
        # Per schedule seen: no tick up to this moment is ours to enqueue (None: the row
        # was this schedule's when this worker first saw it, so missed ticks count).
        self._starts: dict[str, datetime | None] = {}

    def run_once(self) -> list[Tick]:
        """Register new or changed schedules, then enqueue every due tick."""
        if not self.schedules:
            return []
        now = self.clock()
        done = self.connection.run(lambda conn: self._pass(conn, now), attempts=1)
        self._covered_until = now
        return done

    def _pass(self, conn: psycopg.Connection[Any], now: datetime) -> list[Tick]:
        states = self.statements.schedule_states(conn, [s.name for s in self.schedules])
        new = [s for s in self.schedules if s.name not in states]
        if new:
            rows = [_key(s) for s in new]
            self.statements.register_schedules(conn, rows, done_until=now)
            for schedule in new:
                log.info("periodic schedule registered", extra=_fields(schedule))
        done = []
        for schedule in self.schedules:
            state = states.get(schedule.name)
            if state is None:
                continue  # just registered: nothing is due before `now`
            if schedule.name not in self._starts:
                self._starts[schedule.name] = self._first_sight(schedule, state, now)
            try:
                tick = self._enqueue_due(conn, schedule, state, now)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise  # the connection: the whole pass is retried
            except Exception:
                # One schedule that fails (a bug, or a row the database refuses) must not
                # keep the others from being enqueued; it is tried again next pass.
                log.exception("periodic schedule failed", extra=_fields(schedule))
                continue
            if tick is not None:
                done.append(tick)
        return done

    def _first_sight(
        self, schedule: Schedule, state: ScheduleState, now: datetime
    ) -> datetime | None:
        """Where this worker's own ticks start: after `now` if the row was written by
        another schedule (edited, or another version of the app runs beside this one)."""
        if (state.expression, state.timezone) == (_key(schedule)[1:]):
            return None
        log.info(
            "periodic schedule differs from the stored one; both apply while both run",
            extra={**_fields(schedule), "stored_expression": state.expression},
        )
        return now

    def _enqueue_due(
        self, conn: psycopg.Connection[Any], schedule: Schedule, state: ScheduleState, now: datetime
    ) -> Tick | None:
        start = self._starts.get(schedule.name)
        after = state.done_until if start is None else max(state.done_until, start)
        first = schedule.ticks.next_after(after)
        if first is None or first > now:
            return None
        tick = schedule.ticks.latest(now, after=after) or first
        too_late = schedule.too_late(tick, now)
        moved, job_id = self.statements.enqueue_tick(
            conn, schedule=_key(schedule), tick=tick, job=schedule.job, enqueue=not too_late
        )
        if not moved:
            return None  # another worker enqueued it (it led for a beat too)
        fields = {"task": schedule.name, "scheduled_at": tick.isoformat(), "job_id": job_id}
        if first < tick:
            log.info(
                "periodic ticks missed while no worker ran; enqueued only the latest",
                extra={**fields, "first_missed": first.isoformat()},
            )
        if too_late:
            log.info(
                "periodic tick skipped: later than max_lateness",
                extra={**fields, "late": round((now - tick).total_seconds(), 3)},
            )
        else:
            log.info("periodic job enqueued", extra=fields)
        return Tick(schedule.name, tick, job_id, missed=first < tick)

    def next_wait(self) -> float:
        """Until just after the first tick the last pass did not cover, at most `interval`.

        Counted from the last pass's `now`, not from the clock: a pass that ends after a
        tick it started before must be followed at once, or that tick would only be seen
        with the next one and be collapsed into it as if no worker had been running.
        """
        now = self.clock()
        since = self._covered_until or now
        upcoming = [t for s in self.schedules if (t := s.ticks.next_after(since)) is not None]
        if not upcoming:
            return self.interval
        return max(0.0, min(self.interval, (min(upcoming) - now).total_seconds() + _AFTER_TICK))


def _key(schedule: Schedule) -> tuple[str, str, str]:
    """What a schedule row records of a declaration: (name, expression, timezone)."""
    return (schedule.name, schedule.ticks.expression, schedule.ticks.timezone)


def _fields(schedule: Schedule) -> dict[str, str]:
    name, expression, timezone = _key(schedule)
    return {"task": name, "expression": expression, "timezone": timezone}
