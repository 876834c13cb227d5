"""procrastinate: its own CLI's worker, `procrastinate --app=procrastinate_bench.app worker`."""

from __future__ import annotations

from .base import Driver

DRIVER = Driver(
    name="procrastinate",
    peer=True,
    script="procrastinate_bench.py",
    worker=(
        *("-m", "procrastinate", "--app=procrastinate_bench.app"),
        *("--log-level=warning", "worker"),
    ),
    # Its fetch loop claims one job per transaction whatever the concurrency, and it is the
    # slowest to drain here: two settings keep the full run near 15 minutes.
    drain=[["--concurrency", "4"], ["--concurrency", "16"]],
    latency=["--concurrency", "4"],
    # 10 rather than its default of 1, as pgjobs' default.
    default=["--concurrency", "10"],
    # It can only claim one job per call.
    claim_batch=1,
    # A drain takes about 30 s (one job per transaction), and its figure is in no target's
    # ratio (pgqueuer is the faster peer): one round of it is enough.
    drain_rounds=1,
)
