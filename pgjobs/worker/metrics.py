"""Prometheus metrics of one worker: `pgjobs work --metrics-port PORT` serves `/metrics`.

The metrics observe the worker, they do not steer it: job counts, durations and lag come
from the executor's events (`job_metrics.py`, a subscriber like logging), thread and
buffer gauges are read from the capacity and the completer when Prometheus scrapes, and
the queue gauges come from one query every `QUEUE_SAMPLE_INTERVAL` seconds made by the
maintenance leader alone (see `registry.py`), so a fleet of workers and any number of
scrapes cost the database one query.

`prometheus-client` is the optional extra `metrics`; it is imported only when
`--metrics-port` is given, and every name here starts with `pgjobs_`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pgjobs.errors import ConfigurationError
from pgjobs.store import Store
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.events import JobEnded
from pgjobs.worker.job_metrics import JobMetrics
from pgjobs.worker.service import LoopService, Service

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

    from pgjobs.worker.worker import Worker

QUEUE_SAMPLE_INTERVAL = 5.0


def require_prometheus() -> None:
    """Fail with the fix when the `metrics` extra is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "--metrics-port needs the prometheus-client package: "
            "pip install 'pgjobs-queue[metrics]'"
        ) from None


class WorkerMetrics:
    """The metric families of one worker, in a registry of their own."""

    def __init__(
        self,
        worker_id: str,
        *,
        concurrency: int,
        busy: Callable[[], int],
        prefetched: Callable[[], int],
        unwritten: Callable[[], int],
        leader: Callable[[], bool],
    ) -> None:
        from pgjobs import __version__

        require_prometheus()
        from prometheus_client import CollectorRegistry, Gauge, Info, ProcessCollector

        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(namespace="pgjobs", registry=r)
        Info("pgjobs_worker", "This worker.", registry=r).info(
            {"worker_id": worker_id, "version": __version__}
        )
        self.jobs = JobMetrics()
        r.register(self.jobs)
        Gauge("pgjobs_worker_threads", "Executor threads.", registry=r).set(concurrency)
        Gauge("pgjobs_worker_busy_threads", "Threads running a job.", registry=r).set_function(busy)
        Gauge(
            "pgjobs_worker_prefetched_jobs", "Jobs claimed, waiting for a thread.", registry=r
        ).set_function(prefetched)
        Gauge(
            "pgjobs_worker_unwritten_outcomes", "Outcomes waiting to be written.", registry=r
        ).set_function(unwritten)
        Gauge(
            "pgjobs_worker_leader",
            "1 on the maintenance leader, which exports the queue gauges.",
            registry=r,
        ).set_function(lambda: 1.0 if leader() else 0.0)
        self.depth = Gauge(
            "pgjobs_queue_depth",
            "Jobs runnable now, per queue (from the maintenance leader only).",
            ["queue"],
            registry=r,
        )
        self.oldest = Gauge(
            "pgjobs_queue_oldest_waiting_seconds",
            "How long the oldest runnable job has waited, per queue (leader only).",
            ["queue"],
            registry=r,
        )
        self._queues: set[str] = set()

    def set_queues(self, depths: list[tuple[str, int, float]]) -> None:
        """The leader's sample; a queue seen before and empty now reads 0, not absent."""
        sampled = {queue for queue, _, _ in depths}
        for queue in self._queues - sampled:
            self.depth.labels(queue).set(0)
            self.oldest.labels(queue).set(0)
        for queue, count, oldest in depths:
            self.depth.labels(queue).set(count)
            self.oldest.labels(queue).set(oldest)
        self._queues |= sampled

    def clear_queues(self) -> None:
        """Not the leader (any more): export no queue gauges rather than stale ones."""
        if self._queues:
            self.depth.clear()
            self.oldest.clear()
            self._queues = set()


class QueueSampler(LoopService):
    """Sets the queue gauges from one query per interval, on the leader only."""

    def __init__(
        self,
        connection: ResilientConnection,
        store: Store,
        metrics: WorkerMetrics,
        *,
        leader: Callable[[], bool],
        interval: float = QUEUE_SAMPLE_INTERVAL,
    ) -> None:
        super().__init__("queue-sampler", interval)
        self.connection = connection
        self.store = store
        self.metrics = metrics
        self.leader = leader

    def run_once(self) -> bool:
        """Sample the queues if this worker leads; returns whether it did."""
        if not self.leader():
            self.metrics.clear_queues()
            return False
        depths = self.connection.run(self.store.queue_depths, attempts=1)
        self.metrics.set_queues(depths)
        return True

    def close(self) -> None:
        self.connection.close()


class MetricsServer(Service):
    """Serves `/metrics` over HTTP on a thread of prometheus-client's own."""

    name = "metrics-server"

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None

    def start(self) -> None:
        """Listen now, so that a port in use fails the start with one clear line."""
        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(self.port, self.host, registry=self.registry)
        except OSError as error:
            raise ConfigurationError(
                f"--metrics-port: cannot listen on {self.host}:{self.port}: "
                f"{error.strerror or error}"
            ) from error

    def run_once(self) -> str:
        """The text a scrape would get now."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def stop(self, timeout: float) -> bool:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        return True


def metrics_services(worker: Worker) -> list[Service]:
    """The server and the queue sampler of `worker`, its events subscribed to."""
    s = worker.settings
    assert s.metrics_port is not None
    metrics = WorkerMetrics(
        worker.worker_id,
        concurrency=s.concurrency,
        busy=worker.capacity.running,
        prefetched=worker.capacity.waiting,
        unwritten=worker.completer.pending,
        leader=worker.registry.is_leader,
    )
    worker.events.subscribe(metrics.jobs.job_ended, JobEnded)
    sampler = QueueSampler(
        ResilientConnection(worker.app.database.url, "queue-sampler"),
        worker.app.store,
        metrics,
        leader=worker.registry.is_leader,
    )
    return [MetricsServer(metrics.registry, s.metrics_host, s.metrics_port), sampler]
