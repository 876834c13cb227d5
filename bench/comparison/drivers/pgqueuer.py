"""pgqueuer: `pgqueuer_bench.py work`, which calls `pgqueuer.run` on uvloop as `pgq run` does
(pgqueuer 1.6.0's `pgq run` fails at start with today's typer)."""

from __future__ import annotations

from .base import PROCESSES, Driver

# Its default batch (10) and two larger ones, in one process each.
BATCHES = ("10", "50", "200")

DRIVER = Driver(
    name="pgqueuer",
    peer=True,
    script="pgqueuer_bench.py",
    # More processes is pgqueuer's documented way to scale out (one event loop each).
    drain=[
        *(["--batch", batch] for batch in BATCHES),
        [PROCESSES, "2", "--batch", "50"],
        [PROCESSES, "2", "--batch", "200"],
    ],
    drain_async=[["--batch", batch] for batch in BATCHES],
    latency=["--batch", "10"],
    default=["--batch", "10"],
    claim_batch=10,
)
