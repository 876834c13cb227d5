"""Commit-to-start latency, shared by the idle-pickup and steady-state scenarios: the
producer records when each commit returned, the task when it began (a line appended to a
file, no database round trip)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from .config import LATE_TIMEOUT, MARKS_POLL, STARTUP_TIMEOUT
from .run import Run
from .scripts import drive
from .tables import Target, fill_directly, reset, settle
from .workers import WorkerProcess, running_worker


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def percentile_or_nan(values: Sequence[float], p: float) -> float:
    """`percentile`, NaN when there are no values (a report's empty cell)."""
    return percentile(values, p) if values else math.nan


def latencies(
    run: Run, target: Target, scenario: str, count: int, rate: float, lanes: int
) -> tuple[list[float], int, float]:
    """Commit-to-start latencies (ms) of `count` jobs produced at `rate` to a running worker.

    The tables first get a history of finished jobs, as a queue in use has, so that every
    planner sees a table in use: on a freshly analyzed empty table a plan cached while the
    table is tiny (procrastinate's fetch function) stays a sequential scan as it grows. A
    warm-up job then proves the worker is up and listening; it is not counted. Returns the
    latencies of the jobs that started, how many did not, and the rate the producer offered.
    """
    reset(target)
    fill_directly(target, waiting=0, finished=run.counts.history)
    settle(target)
    starts = run.files / f"starts-{target.system.name}-{time.monotonic_ns()}"
    commits_file = run.files / f"commits-{target.system.name}-{time.monotonic_ns()}.json"
    (args,) = run.worker_args(target.system.name, scenario)
    with running_worker(target, args, run.files, starts) as worker:
        drive(
            target, "produce", "--count", "1", "--rate", "1", "--first", "0", "--out", "/dev/null"
        )
        wait_marks(starts, {0}, worker, STARTUP_TIMEOUT)
        time.sleep(0.5)
        drive(
            target,
            "produce",
            *("--count", str(count), "--rate", str(rate), "--first", "1", "--lanes", str(lanes)),
            *("--out", str(commits_file)),
        )
        commits = {int(n): float(at) for n, at in json.loads(commits_file.read_text())}
        with contextlib.suppress(TimeoutError):
            wait_marks(starts, set(commits), worker, LATE_TIMEOUT)
    started = read_marks(starts)
    values = [(started[n] - at) * 1000 for n, at in commits.items() if n in started]
    times = sorted(commits.values())
    produced = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return values, len(commits) - len(values), produced


def read_marks(path: Path) -> dict[int, float]:
    """Task starts recorded by the workers: sequence number -> wall-clock time."""
    if not path.exists():
        return {}
    marks: dict[int, float] = {}
    for line in path.read_text().splitlines():
        n, at = line.split()
        marks.setdefault(int(n), float(at))
    return marks


def wait_marks(path: Path, wanted: set[int], worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= read_marks(path).keys():
        worker.check_alive()
        if time.monotonic() > deadline:
            missing = len(wanted - read_marks(path).keys())
            raise TimeoutError(f"{worker.label}: {missing} jobs not started after {timeout:g}s")
        time.sleep(MARKS_POLL)
