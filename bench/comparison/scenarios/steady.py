"""Steady state: a producer enqueues one job per transaction at a fixed rate on a fixed
schedule, dealt to STEADY_PRODUCER_LANES connections in turn, to one worker process;
latency as in the idle scenario. It keeps up when every job started within LATE_TIMEOUT of
the last commit and p99 < KEEPS_UP_P99_MS; the rate actually offered is noted."""

from __future__ import annotations

from ..common.config import KEEPS_UP_P99_MS, LATE_TIMEOUT, STEADY_PRODUCER_LANES
from ..common.counts import Counts
from ..common.latency import latencies, percentile
from ..common.run import Result, Run
from ..common.tables import Target
from .base import Once


def title(counts: Counts) -> str:
    return f"steady {counts.steady_rate:,.0f} jobs/s for {counts.steady_seconds:g} s"


def steady_state(run: Run, target: Target) -> list[Result]:
    counts = run.counts
    count = int(counts.steady_rate * counts.steady_seconds)
    values, missing, produced = latencies(
        run, target, "steady", count, counts.steady_rate, STEADY_PRODUCER_LANES
    )
    p50, p99 = percentile(values, 50), percentile(values, 99)
    keeps_up = not missing and p99 < KEEPS_UP_P99_MS
    verdict = "keeps up" if keeps_up else "falls behind"
    if missing:
        verdict += (
            f" ({missing:,} not started {LATE_TIMEOUT:g}s after the last; figures of the rest)"
        )
    note = f"{verdict}; offered {produced:,.0f} jobs/s"
    scenario = title(counts)
    name = target.system.name
    return [
        Result(scenario, "p50 ms ↓", name, p50, False, note),
        Result(scenario, "p99 ms ↓", name, p99, False, note),
    ]


SCENARIO = Once(title, steady_state)
