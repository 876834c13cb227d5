"""Worker memory: jobs are enqueued, one worker process drains them, and its resident set
(with any child processes) is read from /proc once the first `memory_early` jobs and once
all of them have finished, or when the time cap ends the run, which the note then says. RSS
includes the interpreter and every library: it compares footprints and shows leaks."""

from __future__ import annotations

from ..common.counts import Counts
from ..common.run import Result, Run
from ..common.scripts import drive
from ..common.tables import Target, reset, settle
from ..common.workers import running_worker, wait_drained
from .base import Once


def title(counts: Counts) -> str:
    return f"worker RSS over {counts.memory:,} jobs"


def worker_memory(run: Run, target: Target) -> list[Result]:
    """RSS after the first jobs and after all of them, unless the time cap came first."""
    counts = run.counts
    total, early, cap = counts.memory, counts.memory_early, counts.memory_seconds
    reset(target)
    drive(target, "bulk", "--count", str(total))
    settle(target)
    samples: dict[str, int] = {}
    (args,) = run.worker_args(target.system.name, "memory")
    with running_worker(target, args, run.files) as worker:

        def sample(unfinished: int) -> None:
            if total - unfinished >= early and "early" not in samples:
                samples["early"] = worker.rss_bytes()

        done = total - wait_drained(target, worker, cap, sample)
        samples["end"] = worker.rss_bytes()
        peak = worker.peak_bytes()
    if "early" not in samples:
        raise RuntimeError(f"only {done:,} jobs done in the {cap:g}s cap")
    mb = 1024 * 1024
    growth = (samples["end"] - samples["early"]) / mb
    note = f"{growth:+.1f} MB from {early:,} to {done:,}; peak {peak / mb:.1f} MB"
    if done < total:
        note = f"time cap: {done:,} of {total:,} done in {cap:g}s; " + note
    scenario = title(counts)
    name = target.system.name
    return [
        Result(scenario, f"MB after {early:,} ↓", name, samples["early"] / mb, False),
        Result(scenario, f"MB after {total:,} ↓", name, samples["end"] / mb, False, note),
    ]


SCENARIO = Once(title, worker_memory)
