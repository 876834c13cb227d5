"""Idle pickup latency: an idle worker (one process) gets jobs one at a time, spaced out;
latency = task start - commit; p50/p95/p99. The tables hold finished jobs first, analyzed,
as a queue in use does (see `latencies`)."""

from __future__ import annotations

from ..common.counts import Counts
from ..common.latency import latencies, percentile
from ..common.run import Result, Run
from ..common.tables import Target
from .base import Once


def title(counts: Counts) -> str:
    return f"idle pickup latency, {counts.latency_jobs} jobs"


def idle_latency(run: Run, target: Target) -> list[Result]:
    counts = run.counts
    values, missing, _ = latencies(
        run, target, "latency", counts.latency_jobs, counts.latency_rate, lanes=1
    )
    if missing:
        raise RuntimeError(f"{missing} of {counts.latency_jobs} jobs never started")
    scenario = title(counts)
    name = target.system.name
    return [
        Result(scenario, f"p{p} ms ↓", name, percentile(values, p), False) for p in (50, 95, 99)
    ]


SCENARIO = Once(title, idle_latency)
