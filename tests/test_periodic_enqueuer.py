"""The periodic enqueuer, one pass at a time (`run_once`), on the test's own schema, with
a clock the test moves; and `pgjobs schedules`, which reads what it leaves behind."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from pgjobs import App, QueueFull
from pgjobs.queue_control import set_queue_limit
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.periodic import PeriodicEnqueuer, Tick
from tests.helpers import jobs, run_cli
from tests.periodic_app import app as periodic_app

UTC = timezone.utc
START = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
Connection = psycopg.Connection[Any]


@dataclass
class Clock:
    """The enqueuer's clock, moved by the test."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def at(self, hour: int, minute: int, second: float = 0) -> None:
        self.now = START.replace(hour=hour, minute=minute, second=0) + timedelta(seconds=second)


@dataclass
class Enqueuers:
    """Makes enqueuers on the test's schema and closes their connections afterwards."""

    database_url: str
    connections: list[ResilientConnection] = field(default_factory=list)

    def __call__(self, app: App, clock: Clock) -> PeriodicEnqueuer:
        self.connections.append(ResilientConnection(self.database_url, "periodic"))
        return PeriodicEnqueuer(
            self.connections[-1], app.data.schedules, list(app.schedules.values()), clock=clock
        )


@pytest.fixture
def enqueuers(database_url: str) -> Iterator[Enqueuers]:
    made = Enqueuers(database_url)
    yield made
    for connection in made.connections:
        connection.close()


def declare_report(app: App, **periodic: Any) -> None:
    @app.periodic(**periodic)
    @app.task(name="report", queue="reports", priority=3)
    def report(region: str = "eu") -> None: ...


def schedule_row(observer: Connection, schema: str, name: str = "report") -> dict[str, Any]:
    query = sql.SQL("SELECT * FROM {} WHERE name = %s").format(sql.Identifier(schema, "schedules"))
    with observer.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(query, [name]).fetchone()
    assert row is not None, f"no schedule row {name!r}"
    return row


def scheduled_times(observer: Connection, schema: str) -> list[datetime]:
    return [job["scheduled_at"] for job in jobs(observer, schema)]


def test_new_schedule_is_registered_without_enqueuing_a_past_tick(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: a schedule due every minute, first seen at 12:00:30
    declare_report(app, every=60)
    clock = Clock()

    # when
    done = enqueuers(app, clock).run_once()

    # then: 12:00:00 passed before the schedule existed, so nothing is enqueued
    assert done == []
    assert jobs(observer, schema) == []
    row = schedule_row(observer, schema)
    assert (row["expression"], row["timezone"], row["done_until"]) == ("every 60s", "UTC", START)
    assert row["last_tick"] is None


def test_due_tick_enqueues_one_job_for_its_scheduled_time(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    declare_report(app, every=60, args={"region": "us"})
    clock = Clock()
    enqueuer = enqueuers(app, clock)
    enqueuer.run_once()
    tick = datetime(2026, 11, 23, 12, 1, tzinfo=UTC)

    clock.at(12, 1, 0.2)
    [done] = enqueuer.run_once()
    again = enqueuer.run_once()

    assert again == []
    [job] = jobs(observer, schema)
    assert done == Tick("report", tick, job["id"], missed=False)
    assert (job["task"], job["payload"], job["queue"], job["priority"]) == (
        "report",
        {"region": "us"},
        "reports",
        3,
    )
    assert job["scheduled_at"] == job["run_at"] == tick
    row = schedule_row(observer, schema)
    assert (row["done_until"], row["last_tick"], row["last_job_id"]) == (tick, tick, job["id"])


def test_claimed_periodic_job_carries_its_scheduled_time(
    app: App, enqueuers: Enqueuers, database_url: str
) -> None:
    declare_report(app, every=60)
    clock = Clock()
    enqueuer = enqueuers(app, clock)
    enqueuer.run_once()
    clock.at(12, 1, 0.2)
    enqueuer.run_once()
    app.enqueue(None, "report", {})

    with psycopg.connect(database_url, autocommit=True) as conn:
        claimed, _ = app.data.claims.claim(conn, limit=10, queue=None, worker_id="test")

    assert sorted((job.scheduled_at is None, job.scheduled_at) for job in claimed) == [
        (False, datetime(2026, 11, 23, 12, 1, tzinfo=UTC)),
        (True, None),
    ]


def test_enqueuers_racing_for_the_same_ticks_enqueue_one_job_per_tick(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: four enqueuers (four workers) that all see every tick at the same moment
    declare_report(app, every=1)
    clock = Clock()
    racers = [enqueuers(app, clock) for _ in range(4)]
    racers[0].run_once()
    won: list[Tick] = []

    # when: for 20 ticks, all four run their pass at once
    for second in range(1, 21):
        clock.at(12, 0, 30 + second + 0.1)
        barrier = threading.Barrier(len(racers))

        def race(enqueuer: PeriodicEnqueuer, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            won.extend(enqueuer.run_once())

        threads = [threading.Thread(target=race, args=(racer,)) for racer in racers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    # then: each tick was enqueued exactly once, by one of them
    expected = [START + timedelta(seconds=n) for n in range(1, 21)]
    assert sorted(tick.tick for tick in won) == expected
    assert sorted(scheduled_times(observer, schema)) == expected


def test_after_a_gap_only_the_latest_missed_tick_is_enqueued(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    declare_report(app, every=60)
    clock = Clock()
    enqueuers(app, clock).run_once()

    # when: no worker ran for over an hour, then a new one starts
    clock.at(13, 15, 20)
    [done] = enqueuers(app, clock).run_once()

    latest = datetime(2026, 11, 23, 13, 15, tzinfo=UTC)
    assert done.tick == latest and done.missed
    assert scheduled_times(observer, schema) == [latest]


def test_tick_later_than_max_lateness_is_skipped(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    declare_report(app, every=60, max_lateness=5)
    clock = Clock()
    enqueuer = enqueuers(app, clock)
    enqueuer.run_once()

    clock.at(12, 1, 30)  # 12:01:00 is 30 s late
    [skipped] = enqueuer.run_once()
    clock.at(12, 2, 1)  # 12:02:00 is 1 s late
    [enqueued] = enqueuer.run_once()

    assert skipped.job_id is None
    assert enqueued.job_id is not None
    assert scheduled_times(observer, schema) == [datetime(2026, 11, 23, 12, 2, tzinfo=UTC)]


def ran_until_13(
    app: App, database_url: str, enqueuers: Enqueuers, *, every: int
) -> tuple[Clock, PeriodicEnqueuer, App]:
    """`report` declared every `every` seconds, enqueued by a worker from 12:00:30 to
    13:00:01; the clock, that worker's enqueuer, and another App on the schema, for the
    next version of the code."""
    declare_report(app, every=every)
    clock = Clock()
    old = enqueuers(app, clock)
    old.run_once()
    clock.at(13, 0, 1)
    old.run_once()
    return clock, old, App(database_url, schema=app.schema)


def test_changed_expression_restarts_the_schedule_with_the_new_one(
    app: App, database_url: str, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: an hourly schedule that has run, then the code changes it to every 15 minutes
    clock, _, changed = ran_until_13(app, database_url, enqueuers, every=3600)
    declare_report(changed, every=900)
    new = enqueuers(changed, clock)

    # when
    clock.at(13, 20)
    restarted = new.run_once()
    clock.at(13, 30, 1)
    [enqueued] = new.run_once()
    changed.close()

    # then: 13:15 passed before the change, so the first job is 13:30's
    assert restarted == []
    assert enqueued.tick == datetime(2026, 11, 23, 13, 30, tzinfo=UTC)
    assert scheduled_times(observer, schema) == [
        datetime(2026, 11, 23, 13, 0, tzinfo=UTC),
        datetime(2026, 11, 23, 13, 30, tzinfo=UTC),
    ]
    assert schedule_row(observer, schema)["expression"] == "every 900s"


def test_two_versions_of_a_schedule_side_by_side_enqueue_the_ticks_of_both(
    app: App, database_url: str, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: a worker of the old version (every 15 minutes) has been running; a worker of
    # the new version (every 10 minutes) starts beside it at 13:01 (a rolling deploy)
    clock, old, changed = ran_until_13(app, database_url, enqueuers, every=900)
    declare_report(changed, every=600)
    new = enqueuers(changed, clock)
    clock.at(13, 1)
    assert new.run_once() == []  # nothing of its own before it started
    # when: both run every minute until 13:31
    for minute in range(2, 32):
        clock.at(13, minute, 1)
        for enqueuer in (old, new):
            enqueuer.run_once()
    changed.close()

    # then: the ticks of both schedules, the shared one (13:30) once
    minutes = [t.minute for t in scheduled_times(observer, schema)]
    assert minutes == [0, 10, 15, 20, 30]


def test_a_periodic_tick_is_enqueued_into_a_queue_over_its_limit(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: the schedule's queue holds more waiting jobs than its --max-waiting allows
    declare_report(app, every=60)
    set_queue_limit(app, "reports", 1)
    clock = Clock()
    enqueuer = enqueuers(app, clock)
    enqueuer.run_once()
    with pytest.raises(QueueFull):
        app.enqueue_many(None, [("report", {}), ("report", {})])
    app.enqueue(None, "report", {})
    # when: a tick comes due
    clock.at(12, 1, 0.2)
    [tick] = enqueuer.run_once()
    # then: it is enqueued all the same: a tick is one job, never a flood, and skipping
    # it would lose it for good
    assert tick.job_id is not None
    assert len(jobs(observer, schema)) == 2


def test_one_failing_schedule_does_not_stop_the_others(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: two schedules due every minute, one of which fails when it computes its ticks
    declare_report(app, every=60)

    @app.periodic(every=60)
    @app.task(name="broken")
    def broken() -> None: ...

    clock = Clock()
    enqueuer = enqueuers(app, clock)
    enqueuer.run_once()
    schedule = app.schedules["broken"]

    def fails(moment: datetime) -> datetime:
        raise RuntimeError("a bug in a schedule")

    object.__setattr__(schedule.ticks, "next_after", fails)
    # when
    clock.at(12, 1, 0.2)
    done = enqueuer.run_once()
    # then: the sound schedule's tick is enqueued all the same
    assert [tick.schedule for tick in done] == ["report"]
    assert [job["task"] for job in jobs(observer, schema)] == ["report"]


def test_schedule_removed_from_the_code_stops(
    app: App, database_url: str, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    declare_report(app, every=60)
    clock = Clock()
    enqueuers(app, clock).run_once()
    without = App(database_url, schema=schema)

    @without.periodic(every=60)
    @without.task(name="other")
    def other() -> None: ...

    clock.at(12, 5, 1)
    done = enqueuers(without, clock).run_once()
    without.close()

    assert done == []  # "other" was just registered, and "report" is no longer declared
    assert jobs(observer, schema) == []


def test_a_second_job_for_a_tick_cannot_exist(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: a tick enqueued, then its schedule row set back (say, restored from a backup)
    declare_report(app, every=60)
    clock = Clock()
    enqueuer = enqueuers(app, clock)
    enqueuer.run_once()
    clock.at(12, 1, 1)
    enqueuer.run_once()
    observer.execute(
        sql.SQL("UPDATE {} SET done_until = %s").format(sql.Identifier(schema, "schedules")),
        [START],
    )

    # when
    [again] = enqueuer.run_once()

    # then: the row moved on, but the unique index refused a second job
    assert again.job_id is None
    assert len(jobs(observer, schema)) == 1


def test_worker_with_periodic_off_enqueues_nothing(app: App) -> None:
    declare_report(app, every=1)

    assert Worker(app, WorkerSettings(periodic=False)).parts.periodic.run_once() == []
    assert Worker(app).parts.periodic.schedules == list(app.schedules.values())


def test_enqueuer_wakes_just_after_the_next_tick(app: App, enqueuers: Enqueuers) -> None:
    declare_report(app, every=60)
    clock = Clock()
    enqueuer = enqueuers(app, clock)

    assert enqueuer.next_wait() == enqueuer.interval  # 29.5 s away: check in meanwhile
    clock.at(12, 0, 59.75)
    assert 0.25 < enqueuer.next_wait() < 0.26


def test_a_pass_that_ends_after_a_tick_is_followed_at_once(
    app: App, enqueuers: Enqueuers, observer: Connection, schema: str
) -> None:
    # given: a schedule every second, registered, and a pass that starts just before a tick
    declare_report(app, every=1)
    clock = Clock()
    enqueuer = enqueuers(app, clock)
    enqueuer.run_once()
    clock.at(12, 0, 31.995)
    [first] = enqueuer.run_once()

    # when: the pass ends after the next tick (12:00:32) was due
    clock.at(12, 0, 32.004)
    wait = enqueuer.next_wait()

    # then: the next pass runs at once and enqueues 12:00:32 on its own, not folded into 33
    assert first.tick == START.replace(second=31)
    assert wait == 0
    clock.at(12, 0, 32.005)
    [second] = enqueuer.run_once()
    assert (second.tick, second.missed) == (START.replace(second=32), False)
    assert len(jobs(observer, schema)) == 2


# --- pgjobs schedules ----------------------------------------------------------------------


def schedules_json(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> list[dict[str, Any]]:
    result = run_cli(
        capsys, database_url, schema, "schedules", "--app", "tests.periodic_app:app", "--json"
    )
    assert result.code == 0, result.err
    listed: list[dict[str, Any]] = json.loads(result.out)
    return listed


def test_schedules_lists_declared_tasks_before_any_worker_ran(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    listed = schedules_json(capsys, database_url, schema)

    assert [(s["task"], s["expression"], s["timezone"], s["status"]) for s in listed] == [
        ("every_second", "every 1s", "UTC", "new"),
        ("nightly", "0 3 * * *", "Europe/Paris", "new"),
    ]
    nightly = listed[1]
    assert nightly["args"] == {"region": "eu"}
    assert nightly["last_tick"] is None
    next_run = datetime.fromisoformat(nightly["next_run"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (next_run.hour, next_run.minute) == (3, 0)


def test_schedules_shows_last_tick_and_gone_schedules(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    schema: str,
    observer: Connection,
    enqueuers: Enqueuers,
) -> None:
    # given: a worker pass registered both schedules and enqueued a tick of one
    clock = Clock(datetime.now(UTC))
    on_schema = App(database_url, schema=schema)
    connection = ResilientConnection(database_url, "periodic")
    enqueuer = PeriodicEnqueuer(
        connection, on_schema.data.schedules, list(periodic_app.schedules.values()), clock=clock
    )
    enqueuer.run_once()
    clock.now += timedelta(seconds=1.5)
    [done] = enqueuer.run_once()
    connection.close()
    on_schema.close()
    # and a schedule stored by an older version of the code
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (name, expression, timezone, done_until) VALUES (%s, %s, %s, now())"
        ).format(sql.Identifier(schema, "schedules")),
        ["retired", "*/5 * * * *", "UTC"],
    )

    listed = {s["task"]: s for s in schedules_json(capsys, database_url, schema)}
    table = run_cli(capsys, database_url, schema, "schedules", "--app", "tests.periodic_app:app")

    assert {name: s["status"] for name, s in listed.items()} == {
        "every_second": "active",
        "nightly": "active",
        "retired": "gone",
    }
    assert datetime.fromisoformat(listed["every_second"]["last_tick"]) == done.tick
    assert listed["every_second"]["last_job_id"] == done.job_id
    assert listed["retired"]["next_run"] is None
    assert table.code == 0, table.err
    assert table.out.split("\n")[0].split() == [
        "task",
        "schedule",
        "timezone",
        "last",
        "tick",
        "next",
        "run",
        "status",
    ]
    assert "retired" in table.out and "gone" in table.out


def test_schedules_needs_an_app(capsys: pytest.CaptureFixture[str], database_url: str) -> None:
    result = run_cli(capsys, database_url, "pgjobs", "schedules")

    assert result.code == 2
    assert "--app" in result.err
