"""Periodic schedules at a moment a test chooses: the worker's enqueuer on a set clock.

A worker registers a schedule the first time it sees it and enqueues only ticks after
that (`pgjobs.worker.periodic`). A test asks "what runs at 03:00?", so a schedule not
registered yet is registered just before the latest tick at or before that moment, as
if a worker had been running all along; then one pass of the worker's own enqueuer, with
its clock set to the moment, enqueues that tick. Later calls carry on from there, like
a worker's next passes (missed ticks in between collapse into the latest, as after a
gap).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pgjobs.app import App
from pgjobs.data.connector import caller_psycopg_connection
from pgjobs.testing.connections import BorrowedConnection
from pgjobs.types import CallerConnection as Caller
from pgjobs.worker.periodic import PeriodicEnqueuer, Tick

# How far back the first registration looks for a schedule's latest tick: a schedule
# that ticks less than yearly has nothing to enqueue at a given moment.
_LOOK_BACK = timedelta(days=366)


def enqueue_periodic(app: App, conn: Caller, at: datetime) -> list[Tick]:
    """Enqueue the ticks of `app`'s schedules that a worker would enqueue at `at`."""
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"at must be an aware datetime, got {at!r}")
    schedules = list(app.schedules.values())
    if not schedules:
        return []
    raw = caller_psycopg_connection(conn)
    states = app.data.schedules.schedule_states(raw, [s.name for s in schedules])
    for schedule in schedules:
        ticks = schedule.ticks
        state = states.get(schedule.name)
        if state is not None and (state.expression, state.timezone) == (
            ticks.expression,
            ticks.timezone,
        ):
            continue
        latest = ticks.latest(at, after=at - _LOOK_BACK)
        since = at if latest is None else latest - timedelta(microseconds=1)
        app.data.schedules.reset_schedules(
            raw, [(schedule.name, ticks.expression, ticks.timezone)], done_until=since
        )
    enqueuer = PeriodicEnqueuer(
        BorrowedConnection(conn), app.data.schedules, schedules, clock=lambda: at
    )
    return enqueuer.run_once()
