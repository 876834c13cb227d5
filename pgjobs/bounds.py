"""The largest numbers pgjobs lets through to PostgreSQL, a timestamp or a timer.

A value past these does not fail where it is given but later and elsewhere: a delay
that PostgreSQL turns into a timestamp it cannot hold aborts the caller's transaction,
a `run_at` Python cannot read back breaks `pgjobs list` for the whole schema, and a
timer past what `time_t` or a lock's timeout holds kills the thread that waits on it.
So every boundary (the API, a decorator, a CLI option, the worker's settings) checks its
numbers here and raises one readable error naming the value.

Nothing here imports the rest of pgjobs, so `pgjobs.errors` can use it.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
# Python's datetime ends with the year 9999, and pgjobs reads every timestamp it writes
# back into one (`pgjobs list`, `show`, the admin API). A day inside each end, so that
# the session's time zone (at most 15 hours away from UTC) cannot push one past it.
EARLIEST_TIMESTAMP = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(9999, 12, 31, tzinfo=UTC)
# The longest delay (enqueue's `delay`, a snooze, a backoff's cap, a periodic interval):
# now + delay stays before LATEST_TIMESTAMP as long as clocks read a year before 3000.
MAX_DELAY_SECONDS = (LATEST_TIMESTAMP - datetime(3000, 1, 1, tzinfo=UTC)).total_seconds()
# The longest wait on a timer (a poll interval, a shutdown timeout, a task's timeout):
# a century, well inside what a lock's timeout (`threading.TIMEOUT_MAX`, 292 years on
# Linux, 49 days on Windows) and a `time_t` deadline hold, and inside what
# `now() - interval` can subtract in PostgreSQL (back to 4713 BC).
MAX_TIMER_SECONDS = min(100 * 365.25 * 86400, threading.TIMEOUT_MAX)
INT_MAX = 2**31 - 1  # PostgreSQL's integer
BIGINT_MAX = 2**63 - 1  # PostgreSQL's bigint (job ids)


def check_seconds(
    name: str,
    value: object,
    *,
    error: type[Exception] = ValueError,
    minimum: float = 0.0,
    exclusive: bool = False,
    maximum: float = MAX_TIMER_SECONDS,
) -> float:
    """`value` (seconds or a timedelta) as float seconds, or `error` naming `name`.

    Refused: what is not a number, NaN, less than `minimum` (or equal to it when
    `exclusive`), and more than `maximum` (infinity included).
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise error(f"{name} must be seconds or a timedelta, got {value!r}")
    if seconds > maximum:  # before float(): an int may be too large for one
        raise error(
            f"{name} must be at most {maximum:.0f} seconds ({_span(maximum)}), got {_shown(value)}"
        )
    if math.isnan(seconds) or seconds < minimum or (exclusive and seconds == minimum):
        rule = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        if minimum > 0 and not exclusive and not math.isnan(seconds):
            unit = "second" if minimum == 1 else "seconds"
            raise error(f"{name} must be at least {minimum:g} {unit}, got {_shown(value)}")
        raise error(f"{name} must be a finite number of seconds {rule}, got {_shown(value)}")
    return float(seconds)


def check_timestamp(name: str, value: datetime, *, error: type[Exception] = ValueError) -> datetime:
    """An aware `value` between EARLIEST_TIMESTAMP and LATEST_TIMESTAMP, or `error`."""
    if not EARLIEST_TIMESTAMP <= value <= LATEST_TIMESTAMP:
        raise error(
            f"{name} must fall between {EARLIEST_TIMESTAMP:%Y-%m-%d} and "
            f"{LATEST_TIMESTAMP:%Y-%m-%d} UTC, got {value.isoformat()}"
        )
    return value


def check_bigint(name: str, value: int, *, error: type[Exception] = ValueError) -> int:
    """A positive `value` that fits PostgreSQL's bigint, or `error`."""
    if not 1 <= value <= BIGINT_MAX:
        raise error(f"{name} must be from 1 to {BIGINT_MAX}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    """`value` for a message, short: `1e+15` rather than `1000000000000000.0`, and no
    integer of hundreds of digits (past 4,300, Python refuses to print one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, int) and abs(value) < 10**15:
        return str(value)
    try:
        return f"{float(value):g}"
    except OverflowError:
        assert isinstance(value, int)
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"


def _span(seconds: float) -> str:
    """A long duration in the unit a reader thinks in: "100 years", "6999 years"."""
    years = seconds / (365.25 * 86400)
    if years >= 1:
        return f"about {years:,.0f} years"
    return f"about {seconds / 86400:,.0f} days"


DEFAULT_RESULT_MAX_BYTES = 1_048_576  # a stored result's JSON, unless App or task says


def check_result_max_bytes(value: object, error: type[Exception]) -> int:
    """A positive whole number of bytes, else `error`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"result_max_bytes must be a positive integer, got {value!r}")
    return value
