"""Claim cost: the median time of one claim through the system's own claim code (batch of
CLAIM_BATCH; procrastinate claims one job per call) with a small table of waiting jobs,
with a big one, and with the big one finished beside the small one waiting. The tables are
filled with INSERT ... SELECT generate_series (triggers off), then VACUUM ANALYZE'd.
pgqueuer deletes finished jobs from its queue table; its finished rows are its log entries.
A claim is timed from the client: what matters is how it changes with the table's size."""

from __future__ import annotations

import statistics

from ..common.counts import Counts
from ..common.run import Result, Run
from ..common.scripts import drive
from ..common.tables import Target, fill_directly, reset, settle
from ..drivers import CLAIM_BATCH
from .base import Once


def title(counts: Counts) -> str:
    return "claim cost (one claim)"


def claim_cost(run: Run, target: Target) -> list[Result]:
    counts = run.counts
    small, big = counts.claim_small, counts.claim_big
    states = {
        f"{small:,} waiting": (small, 0),
        f"{big:,} waiting": (big, 0),
        f"{big:,} finished + {small:,} waiting": (small, big),
    }
    batch = CLAIM_BATCH[target.system.name]
    medians: dict[str, float] = {}
    for state, (waiting, finished) in states.items():
        reset(target)
        fill_directly(target, waiting, finished)
        settle(target)
        timings = drive(
            target,
            "claim",
            *("--count", str(counts.claims), "--batch", str(batch)),
            *("--budget", str(counts.claim_budget)),
        )
        medians[state] = statistics.median(timings["ms"])
    run.settings.record(target.system.name, "claim", f"batch {batch}, {counts.claims} claims")
    first = next(iter(medians.values()))
    return [
        Result(
            title(counts),
            f"ms, {state} ↓",
            target.system.name,
            median,
            False,
            f"x{median / first:.2f} of {small:,} waiting" if n else f"batch {batch}",
        )
        for n, (state, median) in enumerate(medians.items())
    ]


SCENARIO = Once(title, claim_cost)
