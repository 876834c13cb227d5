"""Assembles the worker's parts and runs their life cycle: start, serve, shut down."""

from __future__ import annotations

import logging
import os
import random as random_module
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from pgjobs.app import App
from pgjobs.bounds import check_seconds
from pgjobs.config import normalize_url
from pgjobs.db import first_line
from pgjobs.errors import ConfigurationError
from pgjobs.schema_revision import require_current_schema
from pgjobs.worker.async_executor import AsyncExecutor
from pgjobs.worker.capacity import DEFAULT_WINDOW, Capacity
from pgjobs.worker.completer import DEFAULT_MAX_PENDING, Completer
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.control import ControlMessages
from pgjobs.worker.events import Event, EventBus, OutcomesWritten, WorkerStarted, WorkerStopped
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.fetcher import Fetcher
from pgjobs.worker.heartbeat import Heartbeat
from pgjobs.worker.jobs import ClaimedJob, put_back
from pgjobs.worker.listener import Listener
from pgjobs.worker.log_events import log_event, logged_event_types
from pgjobs.worker.notify_check import PROBE_PAYLOAD, NotifyCheck
from pgjobs.worker.periodic import PeriodicEnqueuer
from pgjobs.worker.queues import QueueSpec
from pgjobs.worker.readier import Readier
from pgjobs.worker.registry import WorkerRegistry, registration
from pgjobs.worker.rescuer import Rescuer
from pgjobs.worker.retention import Retention, RetentionPolicy
from pgjobs.worker.service import LoopService, Service

log = logging.getLogger("pgjobs.worker")

# Each thread costs a stack and a share of the GIL; far beyond this a worker only slows
# down, and thread creation fails late and obscurely (`can't start new thread`).
MAX_CONCURRENCY = 1000
MAX_PREFETCH = 10_000
# Coroutines cost little, so `async def` tasks get more slots than threads by default;
# the real bound is what the tasks use (connections, a remote API's rate limit).
DEFAULT_ASYNC_CONCURRENCY = 100
MAX_ASYNC_CONCURRENCY = 10_000
# The default upper bound of the claim-ahead (`--prefetch`). What the buffer holds is
# bounded in time too (`--claim-window`, see worker/capacity.py): it reaches this only
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
# Writing the last outcomes at shutdown: generous normally, short after a second signal.
FLUSH_TIMEOUT = 10.0
FORCED_FLUSH_TIMEOUT = 2.0


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
    # How long finished jobs stay before a worker deletes them; None: kept (worker/retention.py).
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


class Worker:
    """A pgjobs worker process's engine; `run()` serves until SIGTERM/SIGINT.

    Data path: the fetcher claims jobs in batches into `capacity` (at most `concurrency
    + prefetch` held), executor threads run them and hand outcomes to the completer,
    which writes them in batches. The heartbeat keeps every held job alive; the rescuer
    returns other workers' lost ones; the listener wakes the fetcher on NOTIFY.
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
        self.settings = s = settings or WorkerSettings()
        self.worker_id = worker_id or new_worker_id()
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self._fatal: BaseException | None = None  # what made a service give up
        self.events = EventBus()
        self.events.subscribe(log_event, *logged_event_types())
        self.events.subscribe(self._after_outcomes, OutcomesWritten)
        url = app.database.url
        store = app.store
        # Jobs of `async def` tasks run on the event loop of `self.async_executor`; an App
        # without any gets no loop, and its capacity is the threads' alone.
        async_tasks = frozenset(name for name, task in app.tasks.items() if task.is_async)
        async_slots = s.async_concurrency if async_tasks else 0
        self.capacity = Capacity(
            s.concurrency,
            s.max_claim_ahead,
            async_slots=async_slots,
            is_async=lambda job: job.task in async_tasks,
            window=s.claim_window,
            weights=s.queues.weights,
        )
        self.completer = Completer(
            ResilientConnection(url, "completer"),
            store,
            self.worker_id,
            self.events,
            max_pending=s.max_unwritten,
        )
        self.pool = ExecutorPool(
            capacity=self.capacity,
            tasks=app.tasks,
            worker_id=self.worker_id,
            report=self.completer.submit,
            events=self.events,
            backoff=app.backoff,
            random=random,
        )
        self.async_executor = (
            AsyncExecutor(
                capacity=self.capacity,
                pool=self.pool,
                outcome_room=lambda: self.completer.pending() < s.max_unwritten,
                # The asyncio pool of the loop, if its tasks used enqueue_async(None, ...).
                on_close=lambda: app.async_database.close(),
            )
            if async_slots
            else None
        )
        self.fetcher = Fetcher(
            ResilientConnection(url, "fetcher"),
            store,
            self.capacity,
            s.queues,
            self.worker_id,
            poll_interval=s.poll_interval,
            random=random,
            give_back=self._give_back,
            async_commit=s.async_claim_commit,
        )
        self.readier = Readier(
            ResilientConnection(url, "readier"),
            store,
            self.capacity,
            self.worker_id,
            unsettled_ids=lambda: self.pool.unsettled_ids() + self.completer.pending_ids(),
        )
        self.notify_check = NotifyCheck(
            send_probe=self._send_probe,
            listening=lambda: self.listener.listening,
            poll_every=self.fetcher.poll_every,
            poll_interval=s.poll_interval,
        )
        listen_url = normalize_url(s.listen_database_url) if s.listen_database_url else url
        self.listener = Listener(
            ResilientConnection(listen_url, "listener"),
            store,
            wants=s.queues.wants,
            wake=self.fetcher.notify_job_available,
            heard=self.notify_check.heard,
            on_control=ControlMessages(self.worker_id, self._taken_away).handle,
        )
        self.heartbeat = Heartbeat(
            ResilientConnection(url, "heartbeat"),
            store,
            self.worker_id,
            held=self.held,
            on_lost=self._lost_at_beat,
            interval=s.heartbeat_interval,
        )
        self.rescuer = Rescuer(
            ResilientConnection(url, "rescuer"),
            store,
            self.worker_id,
            rescue_after=s.rescue_after,
            interval=s.heartbeat_interval,
            may_rescue=self.heartbeat.is_current,
        )
        self.retention = Retention(ResilientConnection(url, "retention"), store, s.retention)
        self.periodic = PeriodicEnqueuer(
            ResilientConnection(url, "periodic"),
            store,
            list(app.schedules.values()) if s.periodic else [],
        )
        # Started in this order: whatever produces work starts after what consumes it.
        self.services: list[Service] = [
            self.completer,
            self.pool,
            self.heartbeat,
            self.rescuer,
            self.retention,
            self.listener,
            self.readier,
            self.fetcher,
            self.periodic,
            self.notify_check,
        ]
        self.registry = WorkerRegistry(
            ResilientConnection(url, "registry"),
            store,
            registration(self.worker_id, s),
            interval=s.heartbeat_interval,
        )
        # Observers start first (a metrics port in use fails before anything runs) and
        # stop last (the registry row goes on a clean exit, after the jobs are settled).
        self.observers: list[Service] = [self.registry]
        if s.metrics_port is not None:
            from pgjobs.worker.metrics import metrics_services

            self.observers[:0] = metrics_services(self)
        self.services[:0] = self.observers
        if self.async_executor is not None:
            self.services.insert(self.services.index(self.pool) + 1, self.async_executor)
        for service in (*self.services, self.pool.watchdog):
            if isinstance(service, LoopService):
                service.on_fatal = self._on_fatal

    def _on_fatal(self, service: Service, error: BaseException) -> None:
        """A service met an error no retry can heal (the schema is behind): stop."""
        if self._fatal is None:
            self._fatal = error
            log.critical(
                f"worker stopping: {service.name} cannot go on: {first_line(error)}",
                extra={"component": service.name},
            )
        self.request_stop()

    def held(self) -> dict[int, object]:
        """Every job this worker holds, with what stands for this claim of it: the
        claimed job (None for an outcome not yet written, whose job runs no more)."""
        held: dict[int, object] = dict.fromkeys(self.completer.pending_ids())
        held.update((job.id, job) for job in self.capacity.waiting_jobs())
        held.update((job.id, job) for job in self.pool.unsettled_jobs())
        return held

    def _send_probe(self) -> None:
        # From the App's pool, never the listener's connection: a session notified by
        # itself hears it even behind a transaction pooler.
        with self.app.database.transaction() as conn:
            self.app.store.notify(conn, PROBE_PAYLOAD)

    def _give_back(self, jobs: Sequence[ClaimedJob]) -> None:
        """Return claimed jobs this worker will not start soon to the queue."""
        for job in jobs:
            self.completer.submit(put_back(job))
        log.info(
            "claimed jobs handed back: they would wait longer than the claim window",
            extra={"count": len(jobs), "claim_window": self.settings.claim_window},
        )

    def _taken_away(self, job_ids: Collection[int]) -> None:
        """A control message says these jobs were cancelled: drop or stop them."""
        self.capacity.discard(job_ids)
        self.pool.forget(job_ids)

    def _lost_at_beat(self, lost: Mapping[int, object]) -> None:
        """The heartbeat found these claims cancelled or rescued: drop or stop them, but
        not a later claim of the same job (handed back, then claimed again here)."""
        self.capacity.discard(lost, same_claim=True)
        self.pool.forget(lost, same_claim=True)

    def _after_outcomes(self, event: Event) -> None:
        # A retry due before the next poll would otherwise wait for it.
        if isinstance(event, OutcomesWritten):
            delays = [
                o.delay
                for o in event.outcomes
                if o.job_id in event.applied and o.state == "available" and o.delay is not None
            ]
            if delays:
                self.fetcher.poll_soon(min(delays))

    def start(self) -> None:
        """Start every service; returns at once."""
        for service in self.services:
            service.start()
        s = self.settings
        details: dict[str, object] = {
            "schema": self.app.schema,
            "queues": s.queues.describe(),
            "concurrency": s.concurrency,
            "async_concurrency": self.capacity.async_slots,
            "prefetch": s.max_claim_ahead,
            "claim_window": s.claim_window,
            "claim_commit": "async" if s.async_claim_commit else "durable",
            "shutdown_timeout": s.shutdown_timeout,
            "rescue_after": s.rescue_after,
            "poll_interval": s.poll_interval,
            "retention": s.retention.describe() if s.retention else "off",
            "tasks": len(self.app.tasks),
            "periodic": len(self.periodic.schedules),
            "metrics": f"{s.metrics_host}:{s.metrics_port}" if s.metrics_port else "off",
        }
        self.events.emit(WorkerStarted(self.worker_id, details))

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
        require_current_schema(self.app)
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
        """Stop claiming, give back unstarted jobs, let running ones finish, put back the
        rest; 0 if every outcome was written."""
        self._stopping.set()
        self.fetcher.stop(5.0)
        self.readier.stop(2.0)
        self.periodic.stop(2.0)
        unstarted = self.capacity.close()
        for job in unstarted:
            self.completer.submit(put_back(job))
        running = self.capacity.running() + self.capacity.running_async()
        if running:
            log.info(
                "waiting for running jobs",
                extra={"running": running, "shutdown_timeout": self.settings.shutdown_timeout},
            )
        self.pool.wait_idle(self.settings.shutdown_timeout, interrupted=self._forced)
        put_back_count = len(unstarted) + self.pool.put_back_unsettled()
        self.pool.stop(1.0)
        if self.async_executor is not None:
            self.async_executor.stop(1.0)  # its coroutines were cancelled by the put-back
        clean = self.completer.stop(
            FORCED_FLUSH_TIMEOUT if self._forced.is_set() else FLUSH_TIMEOUT
        )
        for service in (
            self.heartbeat,
            self.rescuer,
            self.retention,
            self.listener,
            self.notify_check,
        ):
            service.stop(2.0)
        for observer in reversed(self.observers):
            observer.stop(2.0)
        self.events.emit(WorkerStopped(self.worker_id, put_back_count, clean))
        return 0 if clean and self._fatal is None else 1
