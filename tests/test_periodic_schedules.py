"""Periodic declarations and their ticks, without a database: what `@app.periodic`
accepts and refuses at import, and when a cron expression or an interval is due,
daylight-saving changes included."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import pgjobs
from pgjobs.ticks import CronTicks, IntervalTicks, Ticks

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
# Nothing connects until a job is enqueued, so declarations need no server.
OFFLINE_URL = "postgresql://nobody@127.0.0.1:1/none"


@pytest.fixture
def app() -> pgjobs.App:
    return pgjobs.App(OFFLINE_URL, schema="periodic_declarations")


def declare(app: pgjobs.App, **periodic: Any) -> pgjobs.Task[..., None]:
    @app.periodic(**periodic)
    @app.task(name="report")
    def report(region: str = "eu") -> None: ...

    return report


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS)


def ticks_between(ticks: Ticks, start: datetime, end: datetime) -> list[datetime]:
    found, moment = [], start
    while (tick := ticks.next_after(moment)) is not None and tick <= end:
        found.append(tick)
        moment = tick
    return found


# --- declarations ------------------------------------------------------------------------


def test_periodic_declaration_registers_a_schedule_on_the_task(app: pgjobs.App) -> None:
    task = declare(app, cron="0 3 * * *", timezone="Europe/Paris", args={"region": "us"})

    schedule = app.schedules["report"]
    assert schedule.task is task is app.tasks["report"]
    assert (schedule.ticks.expression, schedule.ticks.timezone) == ("0 3 * * *", "Europe/Paris")
    assert schedule.args == {"region": "us"}
    assert schedule.job.payload_json == '{"region":"us"}'


@pytest.mark.parametrize(
    ("periodic", "named"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *': Bad minute"),
        ({"cron": "* * * *"}, "has 4 fields; it needs 5"),
        ({"cron": "0 0 * * * *"}, "has 6 fields; it needs 5"),
        ({"cron": "@daily"}, "has 1 fields; it needs 5"),
        ({"cron": "0 0 30 2 *"}, "day-of-month"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "0 3 * * *", "timezone": ""}, "timezone must be an IANA name"),
        ({}, "give exactly one of cron= and every= (neither given)"),
        ({"cron": "0 3 * * *", "every": 60}, "give exactly one of cron= and every= (both given)"),
        ({"every": 0.5}, "every must be at least 1 second"),
        ({"every": -60}, "every must be at least 1 second"),
        ({"every": float("nan")}, "every must be a finite number of seconds"),
        ({"every": "1h"}, "every must be seconds or a timedelta"),
        ({"every": 60, "timezone": "Europe/Paris"}, "timezone applies to cron schedules only"),
        ({"every": 60, "max_lateness": 0}, "max_lateness must be a finite number of seconds > 0"),
        ({"every": 60, "args": {"city": "Riga"}}, "do not fit task report"),
        ({"every": 60, "args": {"region": object()}}, "is not JSON-serialisable"),
        ({"every": 60, "args": ["eu"]}, "args must be a mapping"),
    ],
)
def test_bad_periodic_declaration_is_refused_naming_the_fault(
    app: pgjobs.App, periodic: dict[str, Any], named: str
) -> None:
    with pytest.raises(pgjobs.InvalidScheduleError) as raised:
        declare(app, **periodic)

    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, pgjobs.PgJobsError)
    assert str(raised.value).startswith("periodic task 'report': ")
    assert named in str(raised.value)
    assert app.schedules == {}


def test_periodic_below_task_is_refused(app: pgjobs.App) -> None:
    with pytest.raises(pgjobs.InvalidScheduleError, match=r"must be stacked above @app\.task"):

        @app.task(name="report")
        @app.periodic(every=60)  # type: ignore[arg-type]
        def report() -> None: ...


def test_second_schedule_for_one_task_is_refused(app: pgjobs.App) -> None:
    with pytest.raises(pgjobs.InvalidScheduleError, match="already has a schedule"):

        @app.periodic(every=60)
        @app.periodic(cron="0 3 * * *")
        @app.task(name="report")
        def report() -> None: ...


def test_task_of_another_app_is_refused(app: pgjobs.App) -> None:
    other = pgjobs.App(OFFLINE_URL, schema="other")

    @other.task(name="report")
    def report() -> None: ...

    with pytest.raises(pgjobs.InvalidScheduleError, match="not a task of this App"):
        app.periodic(every=60)(report)


# --- cron ticks ----------------------------------------------------------------------------


def test_cron_ticks_follow_the_time_zone() -> None:
    ticks = CronTicks("0 3 * * *", "Europe/Paris")

    assert ticks.next_after(paris(2026, 1, 10, 12)) == paris(2026, 1, 11, 3).astimezone(UTC)
    assert ticks.next_after(paris(2026, 1, 11, 3)) == paris(2026, 1, 12, 3)


def test_daily_tick_in_the_skipped_hour_runs_once_when_the_clocks_go_forward() -> None:
    # 2026-03-29 in Paris: 02:00 becomes 03:00, so 02:30 does not exist that day.
    ticks = CronTicks("30 2 * * *", "Europe/Paris")

    found = ticks_between(ticks, paris(2026, 3, 28, 12), paris(2026, 3, 30, 12))

    assert [t.astimezone(PARIS).isoformat() for t in found] == [
        "2026-03-29T03:00:00+02:00",  # at once after the skipped hour (Debian cron)
        "2026-03-30T02:30:00+02:00",
    ]


def test_daily_tick_in_the_repeated_hour_runs_once_when_the_clocks_go_back() -> None:
    # 2026-10-25 in Paris: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice.
    ticks = CronTicks("30 2 * * *", "Europe/Paris")

    found = ticks_between(ticks, paris(2026, 10, 24, 12), paris(2026, 10, 26, 12))

    assert [t.astimezone(PARIS).isoformat() for t in found] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_hourly_ticks_follow_real_time_through_the_repeated_hour() -> None:
    ticks = CronTicks("0 * * * *", "Europe/Paris")

    found = ticks_between(ticks, paris(2026, 10, 25, 1, 30), paris(2026, 10, 25, 3, 30))

    # 02:00 comes twice (CEST, then CET): both are hours that really passed.
    assert [t.astimezone(PARIS).isoformat() for t in found] == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: CronTicks("*/5 * * * *", "UTC"),
        lambda: CronTicks("30 2 * * *", "Europe/Paris"),
        lambda: CronTicks("0 0 1 1 *", "America/New_York"),
        lambda: IntervalTicks(7),
        lambda: IntervalTicks(timedelta(hours=1)),
    ],
)
def test_latest_tick_is_the_last_one_going_forward(make: Callable[[], Ticks]) -> None:
    ticks = make()
    after = datetime(2025, 12, 30, 23, 58, tzinfo=UTC)
    now = datetime(2026, 3, 29, 1, 45, 10, tzinfo=UTC)  # after a gap of three months

    latest = ticks.latest(now, after=after)

    assert latest is not None and after < latest <= now
    assert (following := ticks.next_after(latest)) is not None and following > now


def test_latest_tick_is_none_when_no_tick_came_since() -> None:
    ticks = CronTicks("0 3 * * *", "UTC")
    after = datetime(2026, 1, 1, 3, tzinfo=UTC)

    assert ticks.latest(after + timedelta(hours=23), after=after) is None
    assert ticks.latest(after + timedelta(hours=24), after=after) == after + timedelta(days=1)


# --- interval ticks ------------------------------------------------------------------------


def test_interval_ticks_fall_on_multiples_of_the_interval() -> None:
    ticks = IntervalTicks(timedelta(minutes=15))
    moment = datetime(2026, 5, 1, 10, 7, 30, tzinfo=UTC)

    assert ticks.next_after(moment) == datetime(2026, 5, 1, 10, 15, tzinfo=UTC)
    assert ticks.next_after(datetime(2026, 5, 1, 10, 15, tzinfo=UTC)) == datetime(
        2026, 5, 1, 10, 30, tzinfo=UTC
    )
    assert ticks.latest(moment, after=moment - timedelta(hours=5)) == datetime(
        2026, 5, 1, 10, 0, tzinfo=UTC
    )
    assert ticks.expression == "every 900s"
    assert IntervalTicks(1.5).expression == "every 1.5s"
