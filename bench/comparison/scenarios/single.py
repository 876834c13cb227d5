"""Single enqueue: one job per call and per transaction (`task.enqueue` + commit,
`defer_async`, `Queries.enqueue`, INSERT + COMMIT); jobs/s, the median of the rounds (each
commit waits for the disk, so one round swings with the machine's other work)."""

from __future__ import annotations

import statistics

from ..common.counts import Counts
from ..common.run import Result, Run
from ..common.scripts import drive
from ..common.tables import Target, reset, settle
from .base import InRounds


def title(counts: Counts) -> str:
    return f"single enqueue {counts.single:,}, 1 txn each"


def single_round(run: Run, target: Target) -> dict[str, float]:
    reset(target)
    settle(target)
    seconds = float(drive(target, "single", "--count", str(run.counts.single))["seconds"])
    return {"": run.counts.single / seconds}


def single_summary(run: Run, system: str, rates: dict[str, list[float]]) -> list[Result]:
    rounds = rates[""]
    note = "rounds: " + ", ".join(f"{rate:,.0f}" for rate in rounds)
    return [Result(title(run.counts), "jobs/s ↑", system, statistics.median(rounds), True, note)]


SCENARIO = InRounds(title, single_round, single_summary, lambda counts: counts.single_rounds)
