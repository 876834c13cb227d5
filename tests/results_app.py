"""The App that `pgjobs work` subprocesses serve in tests/test_results.py: tasks that
store their results (or not), values that cannot be stored, and failures. Retries are
fast; the App's result cap is small, so "too big" is cheap to reach."""

from __future__ import annotations

from typing import Any

import pgjobs

APP_RESULT_MAX_BYTES = 1000
TASK_RESULT_MAX_BYTES = 10

app = pgjobs.App(
    backoff=pgjobs.Backoff(base=0.05, factor=2.0, cap=0.2, jitter=0.2),
    result_max_bytes=APP_RESULT_MAX_BYTES,
)


@app.task(name="give", store_result=True)
def give(value: Any = None) -> Any:
    """Returns `value`, which is stored."""
    return value


@app.task(name="plain")
def plain(value: Any = None) -> Any:
    """Returns `value`, which is not stored: the task does not store results."""
    return value


@app.task(name="not_json", store_result=True, max_attempts=2)
def not_json() -> Any:
    """Returns a set, which JSON cannot hold."""
    return {1, 2}


@app.task(name="text_of", store_result=True, max_attempts=2)
def text_of(size: int) -> str:
    """Returns `size` characters: past the App's cap, its attempts fail."""
    return "x" * size


@app.task(
    name="small_cap", store_result=True, result_max_bytes=TASK_RESULT_MAX_BYTES, max_attempts=2
)
def small_cap(value: Any) -> Any:
    """Returns `value` under a cap of its own, smaller than the App's."""
    return value


@app.task(name="boom", max_attempts=1)
def boom(message: str) -> None:
    """Fails for good on its only attempt."""
    raise ValueError(message)
