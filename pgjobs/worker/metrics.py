"""Prometheus metrics of one worker: `pgjobs work --metrics-port PORT` serves `/metrics`.

The metrics observe the worker, they do not steer it: job counts, durations and lag come
from the executor's events (`job_metrics.py`, a subscriber like logging), thread and
buffer gauges are read through the callables the assembly passes in when Prometheus
scrapes, and the queue gauges come from one query every `QUEUE_SAMPLE_INTERVAL` seconds
made by the maintenance leader alone (`QueueSampler` is part of its maintenance), so a
fleet of workers and any number of scrapes cost the database one query.

`prometheus-client` is the optional extra `metrics`; it is imported only when
`--metrics-port` is given, and every name here starts with `pgjobs_`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pgjobs.data.maintenance import MaintenanceStatements
from pgjobs.errors import ConfigurationError
from pgjobs.worker.connection import Connections
from pgjobs.worker.job_metrics import JobMetrics
from pgjobs.worker.service import Service, StatementService, StopPhase

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

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


class QueueSampler(StatementService[MaintenanceStatements]):
    """Sets the queue gauges from one query per interval (maintenance: on the leader only);
    stopped, it clears them rather than leave stale ones."""

    def __init__(
        self,
        connection: Connections,
        statements: MaintenanceStatements,
        metrics: WorkerMetrics,
        *,
        interval: float = QUEUE_SAMPLE_INTERVAL,
    ) -> None:
        super().__init__("queue-sampler", interval, connection, statements)
        self.metrics = metrics

    def run_once(self) -> list[tuple[str, int, float]]:
        """Sample the queues; (queue, depth, oldest wait) of each."""
        depths: list[tuple[str, int, float]] = self.connection.run(
            self.statements.queue_depths, attempts=1
        )
        self.metrics.set_queues(depths)
        return depths

    def close(self) -> None:
        """This worker no longer leads: export no queue gauges rather than stale ones."""
        self.metrics.clear_queues()


class MetricsServer(Service):
    """Serves `/metrics` over HTTP on a thread of prometheus-client's own."""

    name = "metrics-server"
    stop_phase = StopPhase.PRESENCE  # starts first: a port in use fails before any work

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
