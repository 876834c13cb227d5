"""Where things are, what the peers' virtualenv holds, and how long compare.py waits."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PEERS = REPO / "bench" / "peers"
PEERS_VENV = REPO / "bench" / ".peers-venv"
PEER_REQUIREMENTS = (
    "procrastinate==3.10.0",
    "pgqueuer[asyncpg]==1.6.0",
    # The same driver, with its C speed-ups, as pgjobs runs on.
    f"psycopg[binary]=={version('psycopg')}",
)
# Connections the steady-state producer deals its jobs to, one transaction per job each, so
# that reaching the rate does not depend on one connection's commit latency.
STEADY_PRODUCER_LANES = 8
KEEPS_UP_P99_MS = 1000.0
POLL = 0.25  # seconds between looks at the tables; the timings come from the rows
MARKS_POLL = 0.02
STALL_TIMEOUT = 60.0  # a drain with no job finished for this long has failed
DRAIN_TIMEOUT = 600.0
STARTUP_TIMEOUT = 60.0
LATE_TIMEOUT = 30.0  # how long after the producer finished a job may still start
DRIVER_TIMEOUT = 900.0
STOP_TIMEOUT = 30.0
