"""The App that bench/limits.py's `pgjobs work` processes serve (`limits_app:app`).

With `BENCH_LIMITS=off` in the environment the same tasks are declared without any
limit (the workers of a schema with no limit anywhere; also pgjobs before limits, whose
`@app.task` takes no such argument). `BENCH_LIMITS_MARKS` names a folder where
`bench.slow` writes, one file per process, when each run of its body began and ended.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pgjobs

app = pgjobs.App()
LIMITED = os.environ.get("BENCH_LIMITS", "on") != "off"
MARKS = os.environ.get("BENCH_LIMITS_MARKS")
SLOW_SECONDS = 0.05
_marks_lock = threading.Lock()


def task(name: str, **limits: Any) -> Callable[[Callable[..., Any]], Any]:
    """`app.task(name=name, **limits)`, or without the limits under `BENCH_LIMITS=off`."""
    return app.task(name=name, **(limits if LIMITED else {}))


@task("bench.noop")
def noop(n: int = 0) -> None:
    """The unlimited job: does nothing."""


@task("bench.slow", concurrency=10)
def slow(n: int = 0) -> None:
    """At most 10 at once across all workers; sleeps 50 ms and records its run."""
    began = time.time()
    time.sleep(SLOW_SECONDS)
    ended = time.time()
    if MARKS:
        with _marks_lock, open(os.path.join(MARKS, f"{os.getpid()}.marks"), "a") as marks:
            marks.write(f"{n} {began:.6f} {ended:.6f}\n")


@task("bench.rated", rate_limit="200/s")
def rated(n: int = 0) -> None:
    """At most 200 starts in any second across all workers; does nothing."""


@task("bench.rare", rate_limit="1/h")
def rare(n: int = 0) -> None:
    """One start an hour: its other jobs wait while the plain jobs drain."""
