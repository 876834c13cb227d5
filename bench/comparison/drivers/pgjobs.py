"""pgjobs: `pgjobs work --app pgjobs_bench:app`, a plain-function task on its thread pool."""

from __future__ import annotations

from .base import PROCESSES, Driver

DRIVER = Driver(
    name="pgjobs",
    peer=False,
    script="pgjobs_bench.py",
    worker=("-m", "pgjobs", "work", "--app", "pgjobs_bench:app", "--log-level", "WARNING"),
    drain=[
        ["--concurrency", "4"],
        ["--concurrency", "10"],
        ["--concurrency", "32"],
        # --prefetch only bounds the claim buffer now; its time window is what sizes it.
        ["--concurrency", "10", "--claim-window", "1"],
        [PROCESSES, "2", "--concurrency", "10"],
    ],
    # The last --app wins: the App whose `bench.job` is an `async def`.
    drain_async=[
        ["--app", "pgjobs_bench:async_app"],
        ["--app", "pgjobs_bench:async_app", "--async-concurrency", "500"],
        [
            *("--app", "pgjobs_bench:async_app"),
            *("--async-concurrency", "500", "--claim-window", "1"),
        ],
    ],
    latency=["--concurrency", "4"],
    default=["--concurrency", "10"],
    claim_batch=10,
)
