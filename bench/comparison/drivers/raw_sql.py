"""raw: the baseline, `raw_sql.py work`: threads claiming with SKIP LOCKED, no bookkeeping.

Every figure is also given as a ratio to it, so its drain gets enough settings to be at its
best on 2 cores: a ratio to a baseline below its best would flatter every system.
"""

from __future__ import annotations

from .base import PROCESSES, Driver

DRIVER = Driver(
    name="raw",
    peer=False,
    script="raw_sql.py",
    drain=[
        # 2, 4 and 8 threads with batches of 50, then the same with batches of 200.
        *(
            ["--threads", threads, "--batch", batch]
            for batch in ("50", "200")
            for threads in ("2", "4", "8")
        ),
        # Batches of 500 in 2 threads: the earlier best (70,000-74,000 jobs/s).
        ["--threads", "2", "--batch", "500"],
        [PROCESSES, "2", "--threads", "4", "--batch", "50"],
        [PROCESSES, "2", "--threads", "2", "--batch", "200"],
        [PROCESSES, "2", "--threads", "2", "--batch", "500"],
    ],
    latency=["--threads", "4", "--batch", "50"],
    default=["--threads", "4", "--batch", "50"],
    claim_batch=10,
)
