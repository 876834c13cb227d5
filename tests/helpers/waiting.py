"""Waiting on a condition instead of sleeping: a test waits exactly as long as it must,
and fails with a message instead of hanging."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Message = str | Callable[[], str]


def _text(message: Message) -> str:
    return message() if callable(message) else message


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: Message = "condition not met",
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy.

    Returns that value. Raises AssertionError with `message` (a string, or a callable
    that builds one, e.g. to include a worker's logs) when `timeout` passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {_text(message)}")
        time.sleep(interval)


def stays_true(
    predicate: Callable[[], object],
    duration: float,
    interval: float = 0.02,
    message: Message = "condition stopped holding",
) -> None:
    """Check that `predicate` holds on every poll for `duration` seconds.

    The way to show that something does *not* happen (a job is not picked up, a worker
    is not woken): raises AssertionError with `message` at the first poll that fails.
    """
    deadline = time.monotonic() + duration
    while True:
        if not predicate():
            raise AssertionError(_text(message))
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)
