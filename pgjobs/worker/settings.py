"""How a worker runs: `WorkerSettings`, checked once, before anything starts."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from pgjobs.bounds import check_seconds
from pgjobs.config import normalize_url
from pgjobs.errors import ConfigurationError
from pgjobs.worker.claim_buffer import DEFAULT_WINDOW
from pgjobs.worker.completer import DEFAULT_MAX_PENDING
from pgjobs.worker.queues import QueueSpec
from pgjobs.worker.retention import RetentionPolicy

# Each thread costs a stack and a share of the GIL; far beyond this a worker only slows
# down, and thread creation fails late and obscurely (`can't start new thread`).
MAX_CONCURRENCY = 1000
MAX_PREFETCH = 10_000
# Coroutines cost little, so `async def` tasks get more slots than threads by default;
# the real bound is what the tasks use (connections, a remote API's rate limit).
DEFAULT_ASYNC_CONCURRENCY = 100
MAX_ASYNC_CONCURRENCY = 10_000
# The default upper bound of the claim-ahead (`--prefetch`). What the buffer holds is
# bounded in time too (`--claim-window`, see worker/claim_buffer.py): it reaches this only
# while tasks are short. At 64 jobs a claim, a drain of no-op jobs spent its time in
# claims' round trips; at 256 it ran about 1.5 times as fast, and at 1,024 another 1.2
# times (claims of about 460 jobs instead of 190: threads no longer ran dry while a claim
# was on its way, and each claim's fixed cost is spread wider).
AUTO_PREFETCH_MAX = 1024
# `--claim-window`: the SPEC caps the time a held job may wait for a thread at a second.
MAX_CLAIM_WINDOW = 1.0
# Heartbeats come every rescue_after / 4 seconds (at most 10): below a second, a live
# worker's own running jobs would look lost between two beats and be rescued again.
MIN_RESCUE_AFTER = 1.0


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs; the defaults are those of `pgjobs work`."""

    concurrency: int = 10
    prefetch: int | None = None  # the claim-ahead's upper bound; None: AUTO_PREFETCH_MAX
    # Seconds of work the claim buffer may hold for the threads, from measured durations.
    claim_window: float = DEFAULT_WINDOW
    # Claims commit without waiting for the disk (`--async-claim-commit`; see CLAIM).
    async_claim_commit: bool = False
    queues: QueueSpec = field(default_factory=lambda: QueueSpec(None))
    shutdown_timeout: float = 30.0
    rescue_after: float = 60.0
    poll_interval: float = 1.0
    max_unwritten: int = DEFAULT_MAX_PENDING  # outcomes waiting to be written, at most
    # How long finished jobs stay (the leader deletes them); None: kept (worker/retention.py).
    retention: RetentionPolicy | None = field(default_factory=RetentionPolicy)
    periodic: bool = True  # enqueue the App's periodic tasks (`--no-periodic`: False)
    # The listener's URL (direct or session-pooled) when the main one is a transaction
    # pooler, where LISTEN does not work; None: the main URL.
    listen_database_url: str | None = None
    metrics_port: int | None = None  # serve Prometheus metrics on this port (None: off)
    metrics_host: str = "127.0.0.1"
    # `async def` tasks run at once on the worker's event loop (only if the App has any).
    async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigurationError(
                f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {self.concurrency}"
            )
        if self.prefetch is not None and not 0 <= self.prefetch <= MAX_PREFETCH:
            raise ConfigurationError(
                f"--prefetch must be between 0 and {MAX_PREFETCH}, got {self.prefetch}"
            )
        if not 1 <= self.async_concurrency <= MAX_ASYNC_CONCURRENCY:
            raise ConfigurationError(
                f"--async-concurrency must be between 1 and {MAX_ASYNC_CONCURRENCY}, "
                f"got {self.async_concurrency}"
            )
        if self.max_unwritten < 1:
            raise ConfigurationError("max_unwritten must be at least 1")
        _check_seconds("--shutdown-timeout", self.shutdown_timeout)
        _check_seconds("--rescue-after", self.rescue_after, minimum=MIN_RESCUE_AFTER)
        _check_seconds("--poll-interval", self.poll_interval, exclusive=True)
        if not (isinstance(self.claim_window, (int, float)) and 0 < self.claim_window <= 1):
            raise ConfigurationError(
                f"--claim-window must be more than 0 and at most {MAX_CLAIM_WINDOW:g} "
                f"second, got {self.claim_window}"
            )
        if self.listen_database_url is not None:
            normalize_url(self.listen_database_url)  # raises ConfigurationError when bad
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise ConfigurationError(
                f"--metrics-port must be between 1 and 65535, got {self.metrics_port}"
            )

    @property
    def max_claim_ahead(self) -> int:
        """Claimed jobs that may wait in the buffer for a free thread, at most."""
        return AUTO_PREFETCH_MAX if self.prefetch is None else self.prefetch

    @property
    def heartbeat_interval(self) -> float:
        """Several heartbeats fit in `rescue_after`, so one slow beat rescues nothing."""
        return min(10.0, self.rescue_after / 4)


def _check_seconds(
    option: str, value: float, *, minimum: float = 0.0, exclusive: bool = False
) -> None:
    """Reject NaN (a NaN poll interval busy-loops), too little, and more than a timer
    holds (a poll interval past `time_t` kills the fetcher's thread)."""
    check_seconds(option, value, minimum=minimum, exclusive=exclusive, error=ConfigurationError)


def new_worker_id() -> str:
    """host:pid:random, readable in `worker_id` and unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
