"""The worker's parts, built and wired in one place.

Every part of a worker is built here, and every line where one part calls another is in
a "who wakes whom" block here, not in the parts' constructors: a part gets callables
(or registers none), and never reaches into another part.

- `DataPath`: claim, run, write, the parts every job goes through. `pgjobs.testing`
  builds it on the test's own connection and runs it inline, one job at a time.
- `WorkerParts`: the data path plus what keeps a `pgjobs work` process going (readier,
  heartbeat, listener and its check, registry, maintenance, metrics). `Worker` (worker.py)
  starts them and stops them in the order their `stop_phase` declares.

Connections: an idle worker holds three at most, each named in `pg_stat_activity` by its
`application_name` (`pgjobs-worker <worker id>` unless the URL names one):
- the shared ones (shared_connections.py) of the fetcher, the completer, the readier,
  the heartbeat, the registry's beat and the notification check: one at rest, one per
  statement running at once in a drain;
- the listener's own (LISTEN is a session's state), on `--listen-database-url` if set;
- the maintenance group's, only while this worker leads (maintenance.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial

from pgjobs.app import App
from pgjobs.config import normalize_url
from pgjobs.types import ClaimedJob
from pgjobs.worker.async_executor import AsyncExecutor
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.completer import FLUSH_DELAY, Completer
from pgjobs.worker.connection import (
    Connections,
    ResilientConnection,
    application_name,
    open_connection,
)
from pgjobs.worker.control import ControlMessages
from pgjobs.worker.events import Event, EventBus, JobEnded, OutcomesWritten
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.fetcher import Claims, Fetcher
from pgjobs.worker.heartbeat import Heartbeat
from pgjobs.worker.hook_dispatch import HookDispatcher
from pgjobs.worker.limits import LimitsWatch
from pgjobs.worker.listener import Listener
from pgjobs.worker.log_events import log_event, logged_event_types
from pgjobs.worker.maintenance import Maintenance
from pgjobs.worker.notify_check import PROBE_PAYLOAD, NotifyCheck
from pgjobs.worker.outcomes import AVAILABLE, OutcomePolicy, put_back
from pgjobs.worker.periodic import PeriodicEnqueuer
from pgjobs.worker.readier import Readier
from pgjobs.worker.registry import (
    MAINTENANCE,
    PERIODIC,
    RETENTION,
    LostWorkers,
    WorkerRegistry,
    registration,
)
from pgjobs.worker.rescuer import Rescuer
from pgjobs.worker.retention import Retention
from pgjobs.worker.service import LoopService, Service
from pgjobs.worker.settings import WorkerSettings
from pgjobs.worker.shared_connections import SharedConnections

log = logging.getLogger("pgjobs.worker")


class DataPath:
    """The fetcher claims into the buffer, the executors run what it holds, the completer
    writes their outcomes; `events` tells whoever subscribes (logging first, then the
    App's hooks through `hooks`)."""

    def __init__(
        self,
        app: App,
        settings: WorkerSettings,
        worker_id: str,
        connection_for: Callable[[str], Connections],
        *,
        random: Callable[[], float],
        flush_delay: float = FLUSH_DELAY,
        inline_hooks: bool = False,
    ) -> None:
        self.settings = settings
        data = app.data
        self.events = EventBus()
        self.events.subscribe(log_event, *logged_event_types())
        # The App's hooks hear the events after logging, on their own thread (inline:
        # in the emitting thread, for pgjobs.testing).
        self.hooks = HookDispatcher(app.hooks, self.events, inline=inline_hooks)
        # Jobs of `async def` tasks run on the async executor's event loop; an App
        # without any gets no loop, and its slots are the threads' alone.
        async_tasks = frozenset(name for name, task in app.tasks.items() if task.is_async)
        self.buffer = ClaimBuffer(
            settings.concurrency,
            settings.max_claim_ahead,
            async_slots=settings.async_concurrency if async_tasks else 0,
            is_async=lambda job: job.task in async_tasks,
            window=settings.claim_window,
            weights=settings.queues.weights,
        )
        self.limits = LimitsWatch(
            data.limits, {name: task.limits for name, task in app.tasks.items()}
        )
        self.completer = Completer(
            connection_for("completer"),
            data.claims,
            worker_id,
            self.events,
            max_pending=settings.max_unwritten,
            flush_delay=flush_delay,
            urgent=self.limits.holds,
        )
        self.executor = ExecutorPool(
            buffer=self.buffer,
            policy=OutcomePolicy(app.tasks, app.backoff, random, worker_id),
            report=self.completer.submit,
            events=self.events,
            middleware=app.hooks.attempt_middleware,
        )
        self.async_executor = (
            AsyncExecutor(
                pool=self.executor,
                outcome_room=lambda: self.completer.pending() < settings.max_unwritten,
                # The asyncio pool of the loop, if its tasks used enqueue_async(None, ...).
                on_close=lambda: app.async_database.close(),
            )
            if async_tasks
            else None
        )
        self.claims = Claims(
            connection_for("fetcher"),
            data.claims,
            settings.queues,
            worker_id,
            random,
            async_commit=settings.async_claim_commit,
            limits=self.limits,
        )
        self.fetcher = Fetcher(
            self.claims,
            self.buffer,
            poll_interval=settings.poll_interval,
            give_back=self.hand_back,
        )
        # Who wakes whom.
        self.buffer.on_room(self.fetcher.wake)
        if self.async_executor is not None:
            self.buffer.on_async_jobs(self.async_executor.wake)
        self.events.subscribe(self._poll_for_retries, OutcomesWritten)
        self.events.subscribe(self._claim_freed_slots, OutcomesWritten)

    def services(self) -> list[Service]:
        """The data path's services (their `stop_phase` orders them)."""
        async_executor = [] if self.async_executor is None else [self.async_executor]
        return [self.completer, self.executor, *async_executor, self.fetcher]

    def held(self) -> dict[int, object]:
        """Every job this worker holds, with what stands for this claim of it: the
        claimed job (None for an outcome not yet written, whose job runs no more)."""
        held: dict[int, object] = dict.fromkeys(self.completer.pending_ids())
        held.update((job.id, job) for job in self.buffer.waiting_jobs())
        held.update((job.id, job) for job in self.executor.unsettled_jobs())
        return held

    def unsettled_ids(self) -> list[int]:
        """Jobs readied here whose outcome is not written: running, or written soon."""
        return self.executor.unsettled_ids() + self.completer.pending_ids()

    def hand_back(self, jobs: Sequence[ClaimedJob]) -> None:
        """Return claimed jobs this worker will not start soon (the buffer's surplus) to
        the queue, the attempt given back."""
        for job in jobs:
            self.completer.submit(put_back(job))
        log.info(
            "claimed jobs handed back: they would wait longer than the claim window",
            extra={"count": len(jobs), "claim_window": self.settings.claim_window},
        )

    def taken_away(self, job_ids: Collection[int]) -> None:
        """A control message says these jobs were cancelled: drop or stop them."""
        self.buffer.discard(job_ids)
        self.executor.forget(job_ids)

    def lost_at_beat(self, lost: Mapping[int, object]) -> None:
        """The heartbeat found these claims cancelled or rescued: drop or stop them, but
        not a later claim of the same job (handed back, then claimed again here)."""
        self.buffer.discard(lost, same_claim=True)
        self.executor.forget(lost, same_claim=True)

    def drain(self, timeout: float, interrupted: threading.Event) -> int:
        """Close the buffer and put back what never started, let running jobs finish
        within `timeout` (or until `interrupted` is set), put back the rest; how many
        jobs were put back."""
        unstarted = self.buffer.close()
        for job in unstarted:
            self.completer.submit(put_back(job))
        running = self.buffer.running() + self.buffer.running_async()
        if running:
            log.info(
                "waiting for running jobs",
                extra={"running": running, "shutdown_timeout": timeout},
            )
        self.executor.wait_idle(timeout, interrupted=interrupted)
        return len(unstarted) + self.executor.put_back_unsettled()

    def _poll_for_retries(self, event: Event) -> None:
        """A retry due before the next poll would otherwise wait for it."""
        if isinstance(event, OutcomesWritten):
            delays = [
                o.delay
                for o in event.outcomes
                if o.job_id in event.applied and o.state == AVAILABLE and o.delay is not None
            ]
            if delays:
                self.fetcher.poll_soon(min(delays))

    def _claim_freed_slots(self, event: Event) -> None:
        """An outcome of a limited job freed a slot that other jobs may wait for (no
        NOTIFY says so): claim again rather than wait for the poll."""
        limits = self.claims.limits
        if isinstance(event, OutcomesWritten) and limits and limits.released(event.applied):
            self.fetcher.notify_job_available()


class WorkerParts(DataPath):
    """Everything a `pgjobs work` worker runs, on its own connections."""

    def __init__(
        self,
        app: App,
        settings: WorkerSettings,
        worker_id: str,
        *,
        random: Callable[[], float],
    ) -> None:
        url = app.database.url
        data = app.data
        beat = settings.heartbeat_interval
        named = application_name(url, worker_id)
        self.shared = SharedConnections(partial(open_connection, url, named))
        super().__init__(app, settings, worker_id, self.shared.for_part, random=random)
        self.readier = Readier(
            self.shared.for_part("readier"),
            data.claims,
            self.buffer,
            worker_id,
            unsettled_ids=self.unsettled_ids,
        )
        self.heartbeat = Heartbeat(
            self.shared.for_part("heartbeat"),
            data.claims,
            worker_id,
            held=self.held,
            on_lost=self.lost_at_beat,
            interval=beat,
        )
        listen = settings.listen_database_url
        listen_url = url if listen is None else normalize_url(listen)
        self.listener = Listener(
            ResilientConnection(
                listen_url, "listener", application_name=application_name(listen_url, worker_id)
            ),
            data.maintenance,
            wants=settings.queues.wants,
            wake=self.fetcher.notify_job_available,
            on_control=ControlMessages(worker_id, self.taken_away).handle,
        )
        probe = self.shared.for_part("notify-check")
        self.notify_check = NotifyCheck(
            # Never on the listener's connection: a session notified by itself hears it
            # even behind a transaction pooler.
            send_probe=lambda: probe.run(
                lambda c: data.maintenance.notify(c, PROBE_PAYLOAD), attempts=2
            ),
            listening=lambda: self.listener.listening,
            poll_every=self.fetcher.poll_every,
            poll_interval=settings.poll_interval,
        )
        self.registry = WorkerRegistry(
            self.shared.for_part("registry"),
            data.maintenance,
            registration(worker_id, settings, has_schedules=bool(app.schedules)),
            interval=beat,
        )
        upkeep = ResilientConnection(url, "maintenance", application_name=named)
        self.rescuer = Rescuer(
            upkeep,
            data.maintenance,
            worker_id,
            rescue_after=settings.rescue_after,
            interval=beat,
            may_rescue=self.heartbeat.is_current,
        )
        self.periodic = PeriodicEnqueuer(
            upkeep, data.schedules, list(app.schedules.values()) if settings.periodic else []
        )
        self.retention = Retention(
            upkeep, data.maintenance, settings.retention, history=data.history
        )
        members: list[tuple[str, LoopService]] = [
            (MAINTENANCE, self.rescuer),
            (MAINTENANCE, LostWorkers(upkeep, data.maintenance, interval=beat)),
            *([(PERIODIC, self.periodic)] if self.periodic.schedules else []),
            *([(RETENTION, self.retention)] if settings.retention is not None else []),
        ]
        self.metrics_server = None
        if settings.metrics_port is not None:
            from pgjobs.worker.metrics import MetricsServer, QueueSampler, WorkerMetrics

            metrics = WorkerMetrics(
                worker_id,
                concurrency=settings.concurrency,
                busy=self.buffer.running,
                prefetched=self.buffer.waiting,
                unwritten=self.completer.pending,
                leader=self.registry.is_leader,
            )
            self.events.subscribe(metrics.jobs.job_ended, JobEnded)
            members.append((MAINTENANCE, QueueSampler(upkeep, data.maintenance, metrics)))
            self.metrics_server = MetricsServer(
                metrics.registry, settings.metrics_host, settings.metrics_port
            )
        self.maintenance = Maintenance(members, upkeep, leads=self.registry.leads, interval=beat)
        # Who wakes whom, beyond the data path's.
        self.buffer.on_ready_wanted(self.readier.wake)
        self.listener.heard = self.notify_check.heard  # any notification proves they arrive
        self.registry.on_leadership(self.maintenance.wake)

    def services(self) -> list[Service]:
        """Every service, in the order they start within a stop phase (`Worker` starts
        the phases last to first, and stops them first to last, each in reverse)."""
        presence: list[Service] = [self.registry]
        if self.metrics_server is not None:
            presence.insert(0, self.metrics_server)  # a port in use fails before any work
        return [
            *presence,
            self.heartbeat,
            self.listener,
            self.notify_check,
            self.maintenance,
            self.readier,
            *super().services(),
        ]

    def close(self) -> None:
        """Close the shared connections (the others close with their services)."""
        self.shared.close()
