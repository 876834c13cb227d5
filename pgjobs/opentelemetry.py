"""OpenTelemetry for pgjobs: `instrument(app)` traces each enqueue and each attempt.

A job may run long after it was enqueued, in another process, so the two ends meet
through the job itself: the producer span's W3C trace context is stored in the job's
metadata (`meta["otel"]`), and the consumer span of each attempt links to it (or, on
request, takes it as its parent). Everything is built from the public hooks
(pgjobs.hooks): an enqueue middleware, attempt middleware for `def` and `async def`
tasks, and event handlers for the optional metrics, so a worker, `pgjobs.testing` and
any producer get the same spans.

Only this module imports `opentelemetry` (the `otel` extra), and only when it is used.
See docs/opentelemetry.md.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pgjobs.errors import ConfigurationError, SnoozeJob
from pgjobs.hooks import Event, JobInfo

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider

    from pgjobs.app import App

__all__ = ["META_KEY", "TraceFields", "instrument"]

META_KEY = "otel"  # the key of `job.meta` that holds the producer's trace context
SYSTEM = "pgjobs"  # `messaging.system`
_SCOPE = "pgjobs.opentelemetry"  # the instrumentation scope of spans and metrics
_ENDINGS = ("job_completed", "job_retried", "job_failed", "job_snoozed", "job_cancelled")

_instrumented: weakref.WeakSet[App] = weakref.WeakSet()
# The attempt whose span ended last in this context: (job id, attempt, its span). The
# worker logs an attempt's ending just after its middleware returned, so that line can
# still carry the attempt's trace id (see `TraceFields`).
_ended: ContextVar[tuple[int | None, int, SpanContext] | None] = ContextVar(
    "pgjobs_otel_ended", default=None
)
_trace_fields: TraceFields | None = None


def instrument(
    app: App,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    link_to_producer: bool = True,
    producer_as_parent: bool = False,
    metrics: bool = False,
    propagator: TextMapPropagator | None = None,
    log_fields: bool = True,
) -> None:
    """Trace `app`'s enqueues and attempts with OpenTelemetry; call it once per App,
    before its worker starts (where the App is defined is the natural place).

    - `tracer_provider`, `meter_provider`: default to the global ones (set later is fine).
    - `link_to_producer`: each consumer span links to the producer span of its job.
    - `producer_as_parent`: the producer span is also the consumer span's parent, so the
      attempt joins the producer's trace (instead of the ambient context's: in a worker,
      a new trace).
    - `metrics`: also record OpenTelemetry metrics (attempts, their durations, enqueued
      jobs) mirroring the worker's Prometheus ones.
    - `propagator`: how the trace context is stored in `meta["otel"]`; by default W3C
      Trace Context alone, whatever the process configured for its HTTP calls, so that
      producers and workers always agree and nothing else (baggage) is stored by surprise.
    - `log_fields`: pgjobs' log handlers add `trace_id` and `span_id` (see `TraceFields`).

    Raises `ConfigurationError` when the OpenTelemetry API is not installed, and when
    `app` is instrumented already: a second call would trace everything twice, and its
    providers could not replace the first call's.
    """
    _require_opentelemetry()
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from pgjobs import __version__

    if app in _instrumented:
        raise ConfigurationError(
            "pgjobs.opentelemetry.instrument() was called on this App already; "
            "call it once, where the App is created"
        )
    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
    tracing = _Tracing(
        tracer,
        propagator or TraceContextTextMapPropagator(),
        link=link_to_producer,
        as_parent=producer_as_parent,
    )
    app.enqueue_middleware(tracing.around_enqueue)
    app.middleware(tracing.around_attempt)
    app.middleware(tracing.around_attempt_async)
    if metrics:
        meter = otel_metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        recorder = _Metrics(meter)
        app.on("job_enqueued")(recorder.enqueued)
        for name in _ENDINGS:
            app.on(name)(recorder.ended)
    if log_fields:
        _add_trace_fields()
    _instrumented.add(app)


class TraceFields(logging.Filter):
    """A logging filter that adds `trace_id` and `span_id` (hex) to a record made while
    a span is current, or to the worker's line about the attempt whose span just ended.

    `instrument` puts it on the handlers pgjobs' CLI installs (`pgjobs.logs`); add it to
    your own handlers for your loggers' records: `handler.addFilter(TraceFields())`.
    """

    def __init__(self) -> None:
        super().__init__()
        _require_opentelemetry()
        from opentelemetry.trace import format_span_id, format_trace_id, get_current_span

        self._current = get_current_span
        self._trace_id = format_trace_id
        self._span_id = format_span_id

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "trace_id"):
            return True  # given by the caller's `extra=`
        context = self._current().get_span_context()
        if not context.is_valid:
            ended = _ended.get()
            if (
                ended is None
                or (
                    getattr(record, "job_id", None),
                    getattr(record, "attempt", None),
                )
                != ended[:2]
            ):
                return True
            _ended.set(None)  # that line is written once; nothing later may reuse it
            context = ended[2]
        record.trace_id = self._trace_id(context.trace_id)
        record.span_id = self._span_id(context.span_id)
        return True


class _Tracing:
    """The producer and consumer spans of one App."""

    def __init__(
        self, tracer: Tracer, propagator: TextMapPropagator, *, link: bool, as_parent: bool
    ) -> None:
        self.tracer = tracer
        self.propagator = propagator
        self.link = link
        self.as_parent = as_parent

    def around_enqueue(self, jobs: list[JobInfo]) -> Iterator[None]:
        """Enqueue middleware: one PRODUCER span around the write of one enqueue call (a
        batch included); its context goes into each job's metadata before the write."""
        if not jobs:
            yield
            return
        from opentelemetry.trace import SpanKind, set_span_in_context

        queues = {job.queue for job in jobs}
        tasks = {job.task for job in jobs}
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        name = "send"
        if len(queues) == 1:  # a batch over several queues has no one destination
            [queue] = queues
            attributes["messaging.destination.name"] = queue
            name = f"send {queue}"
        if len(jobs) > 1:
            attributes["messaging.batch.message_count"] = len(jobs)
        if len(tasks) == 1:
            [attributes["pgjobs.task"]] = tasks
        with self.tracer.start_as_current_span(
            name,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            self.propagator.inject(carrier, context=set_span_in_context(span))
            if carrier:  # nothing when no SDK is configured: no metadata for nothing
                for job in jobs:
                    job.meta[META_KEY] = dict(carrier)
            try:
                yield
            except BaseException as error:
                _failed(span, error)
                raise
            if len(jobs) == 1 and jobs[0].id is not None:
                span.set_attribute("messaging.message.id", str(jobs[0].id))

    def around_attempt(self, job: JobInfo, call_next: Callable[[], Any]) -> Any:
        """Middleware of `def` tasks: the attempt runs in its CONSUMER span."""
        with self._attempt(job):
            return call_next()

    async def around_attempt_async(self, job: JobInfo, call_next: Callable[[], Any]) -> Any:
        """Middleware of `async def` tasks: the attempt runs in its CONSUMER span."""
        with self._attempt(job):
            return await call_next()

    @contextmanager
    def _attempt(self, job: JobInfo) -> Iterator[None]:
        """The span `process <task>` of one attempt, current while the task runs."""
        from opentelemetry import trace
        from opentelemetry.context import Context

        carrier = job.meta.get(META_KEY)
        if not isinstance(carrier, dict):
            carrier = {}
        carrier = {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
        extracted = self.propagator.extract(carrier, context=Context())
        producer = trace.get_current_span(extracted).get_span_context()
        links = None
        context = None  # the ambient context: in a worker, none, so a new trace
        if producer.is_valid:
            links = [trace.Link(producer)] if self.link else None
            # Whatever else the propagator restored (baggage) comes along either way.
            if self.as_parent:
                context = extracted
            else:
                context = trace.set_span_in_context(trace.get_current_span(), extracted)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": str(job.id),
            "pgjobs.task": job.task,
            "pgjobs.attempt": job.attempt,
        }
        if job.workflow_id is not None:
            attributes["pgjobs.workflow_id"] = job.workflow_id
        with self.tracer.start_as_current_span(
            f"process {job.task}",
            context=context,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except SnoozeJob as snooze:  # asked for, not a failure
                span.set_attribute("pgjobs.snoozed", True)
                span.set_attribute("pgjobs.snooze_delay", snooze.delay)
                raise
            except BaseException as error:
                _failed(span, error)
                raise
            finally:
                _ended.set((job.id, job.attempt, span.get_span_context()))


class _Metrics:
    """OpenTelemetry instruments fed by the App's hooks, named after the Prometheus
    metrics they mirror (pgjobs/worker/job_metrics.py): queue lag needs the job's
    `run_at`, which hooks do not see, so it has no counterpart here."""

    def __init__(self, meter: Meter) -> None:
        from pgjobs.worker.job_metrics import DURATION_BUCKETS

        self.finished = meter.create_counter(
            "pgjobs.jobs.finished",
            unit="{attempt}",
            description="Attempts ended, by outcome: completed, retried, failed, snoozed, "
            "cancelled.",
        )
        self.duration = meter.create_histogram(
            "pgjobs.job.duration",
            unit="s",
            description="Time a task ran, per attempt.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.enqueued_jobs = meter.create_counter(
            "pgjobs.jobs.enqueued", unit="{job}", description="Jobs inserted by enqueues."
        )

    def enqueued(self, event: Event) -> None:
        job = event.job
        assert job is not None
        self.enqueued_jobs.add(1, _job_attributes(job))

    def ended(self, event: Event) -> None:
        job = event.job
        assert job is not None
        attributes = {**_job_attributes(job), "pgjobs.outcome": event.name.removeprefix("job_")}
        self.finished.add(1, attributes)
        if event.duration is not None:
            self.duration.record(event.duration, attributes)


def _job_attributes(job: JobInfo) -> dict[str, str]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": job.queue,
        "pgjobs.task": job.task,
    }


def _failed(span: Span, error: BaseException) -> None:
    """Mark `span` failed by `error`: the exception event, `error.type`, ERROR status."""
    from opentelemetry.trace import Status, StatusCode

    kind = type(error)
    module = kind.__module__
    span.record_exception(error)
    span.set_attribute(
        "error.type", kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    )
    span.set_status(Status(StatusCode.ERROR, f"{kind.__name__}: {error}"))


def _add_trace_fields() -> None:
    """Put one `TraceFields` on pgjobs' log handlers, present and future."""
    global _trace_fields
    from pgjobs.logs import add_handler_filter

    if _trace_fields is None:
        _trace_fields = TraceFields()
    add_handler_filter(_trace_fields)


def _require_opentelemetry() -> None:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "pgjobs.opentelemetry needs the OpenTelemetry API: pip install 'pgjobs-queue[otel]'"
        ) from None
