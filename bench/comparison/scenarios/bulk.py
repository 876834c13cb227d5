"""Bulk enqueue: one call of the system's bulk API (pgjobs `enqueue_many`, procrastinate
`batch_defer_async`, pgqueuer `Queries.enqueue` with lists, the baseline's COPY) and its
commit, timed inside the producer process; jobs/s."""

from __future__ import annotations

from ..common.counts import Counts
from ..common.run import Result, Run
from ..common.scripts import drive
from ..common.tables import Target, reset, settle
from .base import Once


def title(counts: Counts) -> str:
    return f"bulk enqueue {counts.bulk:,}"


def bulk_enqueue(run: Run, target: Target) -> list[Result]:
    count = run.counts.bulk
    reset(target)
    settle(target)
    seconds = float(drive(target, "bulk", "--count", str(count))["seconds"])
    return [Result(title(run.counts), "jobs/s ↑", target.system.name, count / seconds, True)]


SCENARIO = Once(title, bulk_enqueue)
