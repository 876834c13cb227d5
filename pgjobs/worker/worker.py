"""Runs a worker's life cycle: check the schema, start the parts, serve, shut down.

The parts and their wiring are built in one place (`assembly.py`). This module only
starts them, last stop phase first, and stops them phase by phase (`StopPhase`), each
phase in the reverse of its start order; between taking no more work and stopping the
executors, the data path drains (unstarted jobs go back, running ones get
`--shutdown-timeout`).
"""

from __future__ import annotations

import logging
import random as random_module
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from pgjobs.app import App
from pgjobs.db import first_line
from pgjobs.errors import DatabaseUnavailableError
from pgjobs.schema_revision import check_schema_revision
from pgjobs.worker.assembly import WorkerParts
from pgjobs.worker.connection import CONNECTION_ERRORS
from pgjobs.worker.events import WorkerStarted, WorkerStopped
from pgjobs.worker.service import LoopService, Service, StopPhase
from pgjobs.worker.settings import WorkerSettings, new_worker_id

log = logging.getLogger("pgjobs.worker")

# After a second signal no service gets longer than this to stop.
FORCED_STOP_TIMEOUT = 2.0
# At exit, the hooks get this long to handle the events still waiting for them.
HOOKS_DRAIN_TIMEOUT = 5.0


class Worker:
    """A pgjobs worker process's engine; `run()` serves until SIGTERM/SIGINT.

    Data path: the fetcher claims jobs in batches into the claim buffer (at most
    `concurrency + prefetch` held), executor threads run them and hand outcomes to the
    completer, which writes them in batches. The heartbeat keeps every held job alive;
    the listener wakes the fetcher on NOTIFY; on the leader of each duty alone, the
    maintenance group rescues lost workers' jobs, enqueues periodic jobs and deletes old
    ones (`maintenance.py`). `parts` holds them all (`WorkerParts`).
    """

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
        self._fatal: BaseException | None = None  # what made a service give up
        self.parts = WorkerParts(app, self.settings, self.worker_id, random=random)
        self.services = self.parts.services()
        _supervise(self.services, self._on_fatal)

    def _on_fatal(self, service: Service, error: BaseException) -> None:
        """A service met an error no retry can heal (the schema is behind): stop."""
        if self._fatal is None:
            self._fatal = error
            log.critical(
                f"worker stopping: {service.name} cannot go on: {first_line(error)}",
                extra={"component": service.name},
            )
        self.request_stop()

    def check_schema(self) -> None:
        """Raise `SchemaNotMigratedError` or `SchemaBehindError` unless the schema is at
        the migration this pgjobs needs (on the worker's own connections)."""
        check = self.parts.shared.for_part("worker")
        try:
            check.run(lambda conn: check_schema_revision(conn, self.app.data.inspect), attempts=1)
        except CONNECTION_ERRORS as error:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL: {first_line(error)}"
            ) from error

    def start(self) -> None:
        """Start every service, last stop phase first; returns at once."""
        self.parts.hooks.start()
        for service in sorted(self.services, key=lambda s: s.stop_phase, reverse=True):
            service.start()
        s = self.settings
        details: dict[str, object] = {
            "schema": self.app.schema,
            "queues": s.queues.describe(),
            "concurrency": s.concurrency,
            "async_concurrency": self.parts.buffer.async_slots,
            "prefetch": s.max_claim_ahead,
            "claim_window": s.claim_window,
            "claim_commit": "async" if s.async_claim_commit else "durable",
            "shutdown_timeout": s.shutdown_timeout,
            "rescue_after": s.rescue_after,
            "poll_interval": s.poll_interval,
            "retention": s.retention.describe() if s.retention else "off",
            "tasks": len(self.app.tasks),
            "periodic": len(self.parts.periodic.schedules),
            "metrics": f"{s.metrics_host}:{s.metrics_port}" if s.metrics_port else "off",
        }
        self.parts.events.emit(WorkerStarted(self.worker_id, details))

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
        """Serve until asked to stop, then shut down; returns the exit status.

        A schema that is not migrated, or behind this pgjobs, raises at once
        (`SchemaNotMigratedError`, `SchemaBehindError`) instead of starting a worker whose
        every claim would fail.
        """
        self.check_schema()
        if install_signal_handlers:
            # SIGHUP too (its terminal closed): a graceful stop, not jobs left running
            # until a rescue.
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, self._on_signal)
        self.start()
        while not self._stopping.wait(0.5):
            pass
        return self.shutdown()

    def shutdown(self) -> int:
        """Stop taking work, drain, stop the rest phase by phase; 0 if every outcome was
        written (the `OUTCOMES` phase stopped cleanly) and no service gave up."""
        self._stopping.set()
        put_back = 0
        clean = True
        for phase in StopPhase:
            if phase is StopPhase.EXECUTION:
                put_back = self.parts.drain(self.settings.shutdown_timeout, self._forced)
            stopping = [service for service in self.services if service.stop_phase is phase]
            for service in reversed(stopping):
                stopped = service.stop(self._stop_timeout(service))
                clean = clean and (stopped or phase is not StopPhase.OUTCOMES)
        self.parts.close()
        self.parts.events.emit(WorkerStopped(self.worker_id, put_back, clean))
        self.parts.hooks.close(HOOKS_DRAIN_TIMEOUT)  # a hung hook does not hold the exit
        return 0 if clean and self._fatal is None else 1

    def _stop_timeout(self, service: Service) -> float:
        if self._forced.is_set():
            return min(service.stop_timeout, FORCED_STOP_TIMEOUT)
        return service.stop_timeout


def _supervise(
    services: Sequence[Service], on_fatal: Callable[[Service, BaseException], None]
) -> None:
    """Have every loop, sub-services included, report an unhealable error to `on_fatal`."""
    for service in services:
        if isinstance(service, LoopService):
            service.on_fatal = on_fatal
        _supervise(service.subservices(), on_fatal)
