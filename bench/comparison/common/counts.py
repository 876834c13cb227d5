"""The sizes of a run: FULL by default, QUICK with `--quick`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Counts:
    """The sizes of a run; `--quick` uses smaller ones."""

    bulk: int  # jobs in the one bulk call
    single: int  # jobs enqueued one transaction each...
    single_rounds: int  # ...this many times; the median is the figure
    drain: int  # no-op jobs per drain run...
    drain_rounds: int  # ...of each setting, this many times; the median is its figure
    latency_jobs: int  # jobs of the idle-latency run...
    latency_rate: float  # ...at this many per second
    steady_rate: float  # jobs per second of the steady state...
    steady_seconds: float  # ...for this long
    history: int  # finished jobs in the tables before a latency run
    claim_small: int  # waiting jobs of the small claim-cost table
    claim_big: int  # waiting, then finished, jobs of the big one
    claims: int  # claims timed per table...
    claim_budget: float  # ...or as many as fit in this many seconds
    memory: int  # jobs drained by the memory run...
    memory_early: int  # ...with the first sample after this many
    memory_seconds: float  # time cap of the memory run


FULL = Counts(
    bulk=100_000,
    single=2_000,
    single_rounds=5,
    drain=20_000,
    drain_rounds=3,
    latency_jobs=200,
    latency_rate=40,
    steady_rate=500,
    steady_seconds=20,
    history=10_000,
    claim_small=10_000,
    claim_big=1_000_000,
    claims=200,
    claim_budget=20,
    memory=100_000,
    memory_early=10_000,
    memory_seconds=150,
)
QUICK = Counts(
    bulk=10_000,
    single=200,
    single_rounds=3,
    drain=1_000,
    drain_rounds=1,
    latency_jobs=30,
    latency_rate=40,
    steady_rate=500,
    steady_seconds=2,
    history=10_000,
    claim_small=10_000,
    claim_big=50_000,
    claims=20,
    claim_budget=2,
    memory=3_000,
    memory_early=300,
    memory_seconds=10,
)
