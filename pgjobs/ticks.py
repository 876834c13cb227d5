"""When a periodic task is due: the ticks of a cron expression or of a fixed interval.

Every worker computes the same ticks from the same declaration, so the database only has
to pick one winner per tick. Ticks are always found going forward (the first tick
strictly after a moment): cronsim's forward iteration is the one that follows Debian
cron through daylight-saving changes, and its reverse iteration does not mirror it.
All times in and out are aware UTC datetimes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from pgjobs.bounds import MAX_DELAY_SECONDS, check_seconds

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Ticks finer than this could not be told apart from the enqueuer's own pace.
MIN_INTERVAL = timedelta(seconds=1)
# After a gap, the latest missed tick is looked for in this last stretch first, so a
# dense schedule does not walk through every tick of a long outage.
RECENT = timedelta(days=1)


class Ticks(ABC):
    """The scheduled times of one schedule, and the text it is stored and shown as."""

    expression: str
    timezone: str

    @abstractmethod
    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after `moment`; None if there is none (within 50 years)."""

    def latest(self, now: datetime, *, after: datetime) -> datetime | None:
        """The latest tick in (`after`, `now`], or None when there is none."""
        start = max(after, now - RECENT)
        found = self._last_until(start, now)
        if found is None and start > after:
            found = self._last_until(after, start)
        return found

    def _last_until(self, start: datetime, end: datetime) -> datetime | None:
        found = None
        for tick in self._ticks_after(start):
            if tick > end:
                break
            found = tick
        return found

    def _ticks_after(self, moment: datetime) -> Iterator[datetime]:
        tick = self.next_after(moment)
        while tick is not None:
            yield tick
            tick = self.next_after(tick)


class CronTicks(Ticks):
    """The ticks of a 5-field cron expression in an IANA time zone (cronsim's rules)."""

    def __init__(self, expression: str, zone_name: str = "UTC") -> None:
        if not isinstance(expression, str):
            raise ValueError(f"cron must be a string, got {expression!r}")
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(
                f"cron expression {expression!r} has {len(fields)} fields; it needs 5 "
                "(minute hour day-of-month month day-of-week)"
            )
        self.expression = " ".join(fields)
        self.timezone = zone_name
        self.zone = time_zone(zone_name)
        try:
            CronSim(self.expression, datetime.now(self.zone))
        except CronSimError as error:
            raise ValueError(f"invalid cron expression {expression!r}: {error}") from None
        if self.next_after(datetime.now(UTC)) is None:
            raise ValueError(f"cron expression {expression!r} never matches a date")

    def next_after(self, moment: datetime) -> datetime | None:
        try:
            tick = next(CronSim(self.expression, moment.astimezone(self.zone)))
        except StopIteration:
            return None
        return tick.astimezone(UTC)

    def _ticks_after(self, moment: datetime) -> Iterator[datetime]:
        # One iterator, rather than one per tick: cronsim keeps its place.
        for tick in CronSim(self.expression, moment.astimezone(self.zone)):
            yield tick.astimezone(UTC)


class IntervalTicks(Ticks):
    """Every `interval`, on multiples of it since 1970-01-01 UTC (every hour: on the hour)."""

    timezone = "UTC"

    def __init__(self, every: float | timedelta) -> None:
        # At most MAX_DELAY_SECONDS: the next tick, at most one interval away, is a job's
        # run_at, and must stay a date PostgreSQL and Python both hold.
        seconds = check_seconds(
            "every", every, minimum=MIN_INTERVAL.total_seconds(), maximum=MAX_DELAY_SECONDS
        )
        self.interval = every if isinstance(every, timedelta) else timedelta(seconds=seconds)
        self.expression = f"every {int(seconds) if seconds.is_integer() else seconds}s"

    def next_after(self, moment: datetime) -> datetime:
        return EPOCH + ((moment - EPOCH) // self.interval + 1) * self.interval

    def latest(self, now: datetime, *, after: datetime) -> datetime | None:
        tick = EPOCH + ((now - EPOCH) // self.interval) * self.interval
        return tick if tick > after else None


def time_zone(name: str) -> timezone | ZoneInfo:
    """The zone called `name` (an IANA name such as "Europe/Paris"), or ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be an IANA name such as 'Europe/Paris', got {name!r}")
    if name == "UTC":
        return UTC  # cronsim takes a faster path for the standard library's UTC
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'"
        ) from None
