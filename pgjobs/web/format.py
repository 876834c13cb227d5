"""How the dashboard's templates write values: counts (capped counts as "10,000+",
estimates as "~1.2M"), ages, moments, durations and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any


@dataclass(frozen=True)
class Count:
    """A count as the dashboard knows it: exact, at least `value` (the count stopped at
    its cap), or an estimate from the planner's statistics."""

    value: int
    capped: bool = False
    estimated: bool = False

    def __str__(self) -> str:
        if self.estimated:
            return f"~{_short(self.value)}"
        return f"{self.value:,}+" if self.capped else f"{self.value:,}"


def _short(value: int) -> str:
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return str(value)


def count(value: Any) -> str:
    return str(value) if isinstance(value, Count) else f"{int(value or 0):,}"


def age(value: timedelta | datetime | None) -> str:
    """ "3m 20s", "2h 5m", "4d 1h" (how long ago, for a moment)."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = datetime.now(timezone.utc) - value
    seconds = int(value.total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes}m"
    elif minutes:
        text = f"{minutes}m {secs}s"
    else:
        text = f"{secs}s"
    return f"in {text}" if future else text


def moment(value: datetime | None) -> str:
    """A timestamp in UTC, to the second."""
    if value is None:
        return "-"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | timedelta | None) -> str:
    """A duration: "850 ms", "2.4 s", "3m 5s"."""
    if value is None:
        return "-"
    total = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if total < 1:
        return f"{total * 1000:.0f} ms"
    if total < 60:
        return f"{total:.1f} s"
    return age(timedelta(seconds=total))


def as_json(value: Any) -> str:
    """Indented JSON for a job's arguments, result or metadata."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


FILTERS: dict[str, Callable[..., str]] = {
    "count": count,
    "age": age,
    "moment": moment,
    "seconds": seconds,
    "as_json": as_json,
}
