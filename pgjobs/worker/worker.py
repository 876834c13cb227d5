"""Assembles the worker's parts and runs their life cycle: start, serve, shut down."""

from __future__ import annotations

import logging
import os
import random as random_module
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from pgjobs.app import App
from pgjobs.errors import ConfigurationError
from pgjobs.worker.completer import Completer
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.fetcher import Fetcher
from pgjobs.worker.jobs import Outcome
from pgjobs.worker.listener import Listener
from pgjobs.worker.maintenance import Maintenance
from pgjobs.worker.queues import QueueSpec

log = logging.getLogger("pgjobs.worker")

# Writing the last outcomes at shutdown: generous normally, short after a second signal.
FLUSH_TIMEOUT = 10.0
FORCED_FLUSH_TIMEOUT = 2.0


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs; the defaults are those of `pgjobs work`."""

    concurrency: int = 10
    queues: QueueSpec = field(default_factory=lambda: QueueSpec(None))
    shutdown_timeout: float = 30.0
    rescue_after: float = 60.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError("--concurrency must be at least 1")
        if self.shutdown_timeout < 0:
            raise ConfigurationError("--shutdown-timeout must be >= 0 seconds")
        if self.rescue_after <= 0:
            raise ConfigurationError("--rescue-after must be > 0 seconds")
        if self.poll_interval <= 0:
            raise ConfigurationError("--poll-interval must be > 0 seconds")

    @property
    def heartbeat_interval(self) -> float:
        """Several heartbeats fit in `rescue_after`, so one slow beat rescues nothing."""
        return min(10.0, self.rescue_after / 4)


def new_worker_id() -> str:
    """host:pid:random, readable in `worker_id` and unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """A pgjobs worker process's engine; `run()` serves until SIGTERM/SIGINT."""

    def __init__(
        self,
        app: App,
        settings: WorkerSettings | None = None,
        *,
        worker_id: str | None = None,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self.app = app
        self.settings = settings or WorkerSettings()
        self.worker_id = worker_id or new_worker_id()
        self._stopping = threading.Event()
        self._forced = threading.Event()
        url = app.database.url
        queries = app.queries
        self.completer = Completer(
            ResilientConnection(url, "completer"),
            queries,
            self.worker_id,
            on_written=self._after_outcomes,
        )
        self.pool = ExecutorPool(
            concurrency=self.settings.concurrency,
            tasks=app.tasks,
            worker_id=self.worker_id,
            report=self.completer.submit,
            backoff=app.backoff,
            random=random,
            on_slot_freed=lambda: self.fetcher.notify_slot_freed(),
        )
        self.fetcher = Fetcher(
            ResilientConnection(url, "fetcher"),
            queries,
            self.pool,
            self.settings.queues,
            self.worker_id,
            poll_interval=self.settings.poll_interval,
            random=random,
        )
        self.listener = Listener(
            ResilientConnection(url, "listener"),
            queries,
            wants=self.settings.queues.wants,
            wake=self.fetcher.notify_job_available,
        )
        self.maintenance = Maintenance(
            ResilientConnection(url, "maintenance"),
            queries,
            self.worker_id,
            # Finished jobs stay `running` until the completer writes them: beat for both.
            held_ids=lambda: self.pool.held_ids() + self.completer.pending_ids(),
            on_lost=self.pool.forget,
            heartbeat_interval=self.settings.heartbeat_interval,
            rescue_after=self.settings.rescue_after,
        )

    def _after_outcomes(self, batch: list[Outcome], applied: set[int]) -> None:
        # A retry due before the next poll would otherwise wait for it.
        retry_delays = [o.delay for o in batch if o.job_id in applied and o.state == "available"]
        if retry_delays:
            self.fetcher.poll_soon(min(retry_delays))

    def start(self) -> None:
        """Start every part; returns at once."""
        for part in (self.completer, self.pool, self.listener, self.maintenance, self.fetcher):
            part.start()
        s = self.settings
        log.info(
            "worker started",
            extra={
                "worker_id": self.worker_id,
                "schema": self.app.schema,
                "queues": s.queues.describe(),
                "concurrency": s.concurrency,
                "shutdown_timeout": s.shutdown_timeout,
                "rescue_after": s.rescue_after,
                "poll_interval": s.poll_interval,
                "tasks": len(self.app.tasks),
            },
        )

    def request_stop(self) -> None:
        """Begin a graceful shutdown; a second call makes it immediate."""
        if self._stopping.is_set():
            self._forced.set()
        self._stopping.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            log.warning("second signal: exiting now", extra={"signal": name})
        else:
            log.info("signal received: shutting down", extra={"signal": name})
        self.request_stop()

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Serve until asked to stop, then shut down; returns the exit status."""
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.start()
        while not self._stopping.wait(0.5):
            pass
        return self.shutdown()

    def shutdown(self) -> int:
        """Stop claiming, let running jobs finish, put the rest back; 0 if all was written."""
        self._stopping.set()
        self.fetcher.stop()
        running = self.pool.busy()
        if running:
            log.info(
                "waiting for running jobs",
                extra={"running": running, "shutdown_timeout": self.settings.shutdown_timeout},
            )
        self.pool.wait_idle(self.settings.shutdown_timeout, interrupted=self._forced)
        put_back = self.pool.put_back_all()
        self.pool.stop()
        flushed = self.completer.stop(
            FORCED_FLUSH_TIMEOUT if self._forced.is_set() else FLUSH_TIMEOUT
        )
        self.maintenance.stop()
        self.listener.stop()
        log.info(
            "worker stopped",
            extra={"worker_id": self.worker_id, "put_back": put_back, "clean": flushed},
        )
        return 0 if flushed else 1
