"""`pgjobs.opentelemetry`: producer and consumer spans, their link through the job's
metadata, metrics and log fields; inline (`pgjobs.testing`) and across processes (a real
`pgjobs work` serving tests/otel_app.py, which writes its spans to a file).

Each test gives `instrument` a TracerProvider of its own, never the global one, and
reads its spans from the SDK's in-memory exporter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgjobs.logs
from pgjobs import App, ConfigurationError, SnoozeJob
from pgjobs.opentelemetry import TraceFields, instrument
from pgjobs.queue_control import set_queue_limit
from pgjobs.testing import Jobs
from tests.helpers import StartWorker, wait_for_job, wait_until
from tests.helpers.readme import code_blocks, doc_section
from tests.otel_app import SPANS_ENV

Connection = psycopg.Connection[Any]


@pytest.fixture(autouse=True)
def own_log_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The log filters `instrument` registers stay with this test."""
    monkeypatch.setattr(pgjobs.logs, "_handler_filters", [])


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def spans(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is kind]


def ids(span: ReadableSpan | trace.Span | None) -> tuple[int, int]:
    """(trace id, span id) of a span."""
    assert span is not None
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def link_ids(span: ReadableSpan) -> list[tuple[int, int]]:
    return [(link.context.trace_id, link.context.span_id) for link in span.links]


def traceparent(span: ReadableSpan) -> str:
    """The W3C `traceparent` of a span."""
    context = span.get_span_context()
    assert context is not None
    trace_id, span_id = (
        trace.format_trace_id(context.trace_id),
        trace.format_span_id(context.span_id),
    )
    return f"00-{trace_id}-{span_id}-{context.trace_flags:02x}"


# --- inline, through pgjobs.testing ----------------------------------------------------------


def test_an_inline_job_has_a_producer_span_and_a_consumer_span_linked_to_it(
    app: App, helper: Jobs, test_conn: Connection, provider: TracerProvider, exporter: Any
) -> None:
    seen: dict[str, Any] = {}

    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> None:
        seen["current"] = trace.get_current_span()
        with provider.get_tracer("test").start_as_current_span("render") as inner:
            seen["inner"] = inner

    instrument(app, tracer_provider=provider)
    job_id = send.enqueue(test_conn, to="a@example.com")

    [producer] = spans(exporter, SpanKind.PRODUCER)
    assert producer.name == "send mail"
    assert dict(producer.attributes or {}) == {
        "messaging.system": "pgjobs",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": str(job_id),
        "pgjobs.task": "mail.send",
    }
    [job] = helper.assert_enqueued(send)
    assert job.meta == {"otel": {"traceparent": traceparent(producer)}}

    helper.run().raise_errors()

    [consumer] = spans(exporter, SpanKind.CONSUMER)
    assert consumer.name == "process mail.send"
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "pgjobs",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "mail",
        "messaging.message.id": str(job_id),
        "pgjobs.task": "mail.send",
        "pgjobs.attempt": 1,
    }
    assert link_ids(consumer) == [ids(producer)]
    # a link, not a parent: the attempt starts a trace of its own
    assert consumer.parent is None
    assert ids(consumer)[0] != ids(producer)[0]
    assert consumer.status.status_code is StatusCode.UNSET
    # the span is current while the task runs, so the task's own spans nest in it
    assert ids(seen["current"]) == ids(consumer)
    [inner] = [span for span in exporter.get_finished_spans() if span.name == "render"]
    assert inner.parent is not None and inner.parent.span_id == ids(consumer)[1]


def test_a_failed_attempt_records_its_exception_and_its_retry_is_attempt_2(
    app: App, helper: Jobs, test_conn: Connection, provider: TracerProvider, exporter: Any
) -> None:
    @app.task(name="flaky", max_attempts=2, pass_context=True)
    def flaky(context: pgjobs.JobContext) -> None:
        if context.attempt == 1:
            raise ValueError("not yet")

    instrument(app, tracer_provider=provider)
    flaky.enqueue(test_conn)
    [producer] = spans(exporter, SpanKind.PRODUCER)

    assert helper.run().counts == {"retried": 1}
    [first] = spans(exporter, SpanKind.CONSUMER)
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "ValueError: not yet"
    assert first.attributes is not None
    assert first.attributes["pgjobs.attempt"] == 1
    assert first.attributes["error.type"] == "ValueError"
    [event] = first.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert (event.attributes["exception.type"], event.attributes["exception.message"]) == (
        "ValueError",
        "not yet",
    )

    assert helper.run(delayed=True).counts == {"completed": 1}
    [_, second] = spans(exporter, SpanKind.CONSUMER)
    assert second.attributes is not None
    assert second.attributes["pgjobs.attempt"] == 2
    assert second.status.status_code is StatusCode.UNSET
    assert second.events == ()
    # every attempt links to the one enqueue
    assert link_ids(first) == link_ids(second) == [ids(producer)]


def test_a_snooze_is_no_error(
    app: App, helper: Jobs, test_conn: Connection, provider: TracerProvider, exporter: Any
) -> None:
    @app.task(name="later")
    def later() -> None:
        raise SnoozeJob(30)

    instrument(app, tracer_provider=provider)
    later.enqueue(test_conn)
    assert helper.run().counts == {"snoozed": 1}

    [consumer] = spans(exporter, SpanKind.CONSUMER)
    assert consumer.status.status_code is StatusCode.UNSET
    assert consumer.events == ()
    assert consumer.attributes is not None
    assert consumer.attributes["pgjobs.snoozed"] is True
    assert "error.type" not in consumer.attributes


def test_an_async_enqueue_and_an_async_task(
    app: App, database_url: str, provider: TracerProvider, exporter: Any
) -> None:
    seen: dict[str, Any] = {}

    @app.task(name="async.greet", max_attempts=1)
    async def greet(name: str) -> None:
        await asyncio.sleep(0)
        seen["current"] = trace.get_current_span()
        if name == "bad":
            raise RuntimeError("no greeting for bad")

    instrument(app, tracer_provider=provider)
    tracer = provider.get_tracer("test")

    async def handle_request() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as aconn:
            with tracer.start_as_current_span("request") as request:
                job_ids = [
                    await app.enqueue_async(aconn, "async.greet", {"name": name})
                    for name in ("ann", "bad")
                ]
                # the producer span was current during the write only
                assert trace.get_current_span() is request
            await aconn.commit()
        return job_ids

    ok_id, bad_id = asyncio.run(handle_request())

    [request] = [span for span in exporter.get_finished_spans() if span.name == "request"]
    producers = spans(exporter, SpanKind.PRODUCER)
    assert [p.attributes and p.attributes["messaging.message.id"] for p in producers] == [
        str(ok_id),
        str(bad_id),
    ]
    assert all(p.parent is not None and p.parent.span_id == ids(request)[1] for p in producers)

    with Jobs(app) as jobs:
        assert jobs.run().counts == {"completed": 1, "failed": 1}
    consumers = {
        span.attributes["messaging.message.id"]: span
        for span in spans(exporter, SpanKind.CONSUMER)
        if span.attributes is not None
    }
    assert link_ids(consumers[str(ok_id)]) == [ids(producers[0])]
    assert link_ids(consumers[str(bad_id)]) == [ids(producers[1])]
    assert consumers[str(ok_id)].status.status_code is StatusCode.UNSET
    assert consumers[str(bad_id)].status.status_code is StatusCode.ERROR
    assert consumers[str(bad_id)].name == "process async.greet"
    assert ids(seen["current"]) == ids(consumers[str(bad_id)])


def test_a_batch_is_one_producer_span_whose_context_every_job_carries(
    app: App, helper: Jobs, test_conn: Connection, provider: TracerProvider, exporter: Any
) -> None:
    @app.task(name="resize", queue="images")
    def resize(n: int) -> None: ...

    instrument(app, tracer_provider=provider)
    job_ids = app.enqueue_many(test_conn, [("resize", {"n": n}) for n in range(3)])

    [producer] = spans(exporter, SpanKind.PRODUCER)
    assert producer.name == "send images"
    assert producer.attributes is not None
    assert producer.attributes["messaging.batch.message_count"] == 3
    assert producer.attributes["pgjobs.task"] == "resize"
    assert "messaging.message.id" not in producer.attributes
    stored = {job.id: job.meta for job in helper.find(resize)}
    context = {"otel": {"traceparent": traceparent(producer)}}
    assert stored == {job_id: context for job_id in job_ids}

    assert helper.run().counts == {"completed": 3}
    consumers = spans(exporter, SpanKind.CONSUMER)
    assert sorted(c.attributes["messaging.message.id"] for c in consumers if c.attributes) == (
        sorted(map(str, job_ids))
    )
    assert [link_ids(c) for c in consumers] == [[ids(producer)]] * 3


def test_a_batch_over_queues_and_tasks_names_neither(
    app: App, test_conn: Connection, provider: TracerProvider, exporter: Any
) -> None:
    instrument(app, tracer_provider=provider)
    app.enqueue_many(test_conn, [("a", {}, {"queue": "q1"}), ("b", {}, {"queue": "q2"})])

    [producer] = spans(exporter, SpanKind.PRODUCER)
    assert producer.name == "send"
    assert producer.attributes is not None
    assert producer.attributes["messaging.batch.message_count"] == 2
    assert "messaging.destination.name" not in producer.attributes
    assert "pgjobs.task" not in producer.attributes


@pytest.mark.parametrize(
    ("options", "parented", "linked"),
    [
        ({"producer_as_parent": True}, True, True),
        ({"producer_as_parent": True, "link_to_producer": False}, True, False),
        ({"link_to_producer": False}, False, False),
    ],
)
def test_the_producer_can_be_the_parent_instead_of_or_besides_a_link(
    app: App,
    helper: Jobs,
    test_conn: Connection,
    provider: TracerProvider,
    exporter: Any,
    options: dict[str, bool],
    parented: bool,
    linked: bool,
) -> None:
    @app.task(name="work")
    def work() -> None: ...

    instrument(app, tracer_provider=provider, **options)
    work.enqueue(test_conn)
    helper.run().raise_errors()

    [producer] = spans(exporter, SpanKind.PRODUCER)
    [consumer] = spans(exporter, SpanKind.CONSUMER)
    if parented:
        assert consumer.parent is not None
        assert (consumer.parent.trace_id, consumer.parent.span_id) == ids(producer)
    else:
        assert consumer.parent is None
        assert ids(consumer)[0] != ids(producer)[0]
    assert link_ids(consumer) == ([ids(producer)] if linked else [])


def test_a_failed_write_fails_the_producer_span(
    app: App, provider: TracerProvider, exporter: Any
) -> None:
    instrument(app, tracer_provider=provider)
    set_queue_limit(app, "mail", 0)

    with pytest.raises(pgjobs.QueueFull):
        app.enqueue(None, "send", {}, queue="mail")

    [producer] = spans(exporter, SpanKind.PRODUCER)
    assert producer.status.status_code is StatusCode.ERROR
    assert producer.attributes is not None
    assert producer.attributes["error.type"] == "pgjobs.errors.QueueFull"
    assert "messaging.message.id" not in producer.attributes
    assert [event.name for event in producer.events] == ["exception"]


def test_metrics_count_attempts_durations_and_enqueued_jobs(
    app: App, helper: Jobs, test_conn: Connection, provider: TracerProvider
) -> None:
    @app.task(name="ok", queue="q")
    def ok() -> None: ...

    @app.task(name="bad", queue="q", max_attempts=1)
    def bad() -> None:
        raise ValueError("bad")

    reader = InMemoryMetricReader()
    instrument(
        app,
        tracer_provider=provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        metrics=True,
    )
    app.enqueue_many(test_conn, [("ok", {}), ("ok", {}), ("bad", {})])
    assert helper.run().counts == {"completed": 2, "failed": 1}

    points = metric_points(reader)
    common = {"messaging.system": "pgjobs", "messaging.destination.name": "q"}
    assert points["pgjobs.jobs.enqueued"] == {
        frozenset({**common, "pgjobs.task": "ok"}.items()): 2,
        frozenset({**common, "pgjobs.task": "bad"}.items()): 1,
    }
    completed = frozenset({**common, "pgjobs.task": "ok", "pgjobs.outcome": "completed"}.items())
    failed = frozenset({**common, "pgjobs.task": "bad", "pgjobs.outcome": "failed"}.items())
    assert points["pgjobs.jobs.finished"] == {completed: 2, failed: 1}
    assert points["pgjobs.job.duration"] == {completed: 2, failed: 1}  # observations


def metric_points(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[Any], int]]:
    """Each metric's points: a sum's value or a histogram's count, by attributes."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, dict[frozenset[Any], int]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = {
                    frozenset((point.attributes or {}).items()): int(
                        getattr(point, "count", None) or getattr(point, "value", 0)
                    )
                    for point in metric.data.data_points
                }
    return found


def test_pgjobs_log_lines_carry_the_trace_of_the_attempt(
    app: App, helper: Jobs, test_conn: Connection, provider: TracerProvider, exporter: Any
) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    pgjobs_logger = logging.getLogger("pgjobs")
    pgjobs_logger.addHandler(handler)  # a handler pgjobs' logs have before instrument()
    try:

        @app.task(name="chatty", max_attempts=2)
        def chatty() -> None:
            logging.getLogger("pgjobs.chatty").warning("working")
            raise RuntimeError("fails")

        instrument(app, tracer_provider=provider)
        chatty.enqueue(test_conn)
        logging.getLogger("pgjobs.test").warning("outside any span")
        helper.run()
    finally:
        pgjobs_logger.removeHandler(handler)

    [consumer] = spans(exporter, SpanKind.CONSUMER)
    expected = hex_ids(consumer)
    by_message = {record.getMessage(): record for record in records}
    assert not hasattr(by_message["outside any span"], "trace_id")
    for message in ("working", "job attempt failed"):  # in the span; just after it ended
        record = by_message[message]
        fields = {key: getattr(record, key, None) for key in ("trace_id", "span_id")}
        assert fields == expected, message


# --- set-up errors ----------------------------------------------------------------------------


def test_instrumenting_an_app_twice_is_refused_and_traces_once(
    app: App, helper: Jobs, test_conn: Connection, provider: TracerProvider, exporter: Any
) -> None:
    @app.task(name="noop")
    def noop() -> None: ...

    instrument(app, tracer_provider=provider)
    with pytest.raises(ConfigurationError, match="called on this App already"):
        instrument(app, tracer_provider=provider)

    noop.enqueue(test_conn)
    helper.run()
    assert len(spans(exporter, SpanKind.PRODUCER)) == 1
    assert len(spans(exporter, SpanKind.CONSUMER)) == 1


def test_without_opentelemetry_instrument_says_what_to_install(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'pgjobs-queue\[otel\]'"):
        instrument(app)
    with pytest.raises(ConfigurationError, match="OpenTelemetry API"):
        TraceFields()
    assert not app.hooks.producing  # nothing half-registered
    assert app.hooks.attempt_middleware.sync == ()


# --- across processes: a real worker ----------------------------------------------------------


def test_a_worker_links_its_consumer_span_to_the_producers(
    app: App,
    provider: TracerProvider,
    exporter: Any,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    monkeypatch.setenv(SPANS_ENV, str(spans_file))
    worker = start_worker("--log-format", "json", app="tests.otel_app:app")
    instrument(app, tracer_provider=provider)

    greet_id = app.enqueue(None, "otel.greet", {"name": "ann"})
    flaky_id = app.enqueue(None, "otel.flaky", {"marker": "m"}, max_attempts=2)
    async_id = app.enqueue(None, "otel.async_greet", {"name": "bob"})
    producers = {
        span.attributes["messaging.message.id"]: span
        for span in spans(exporter, SpanKind.PRODUCER)
        if span.attributes is not None
    }

    def worker_spans() -> dict[tuple[str, int], dict[str, Any]]:
        lines = spans_file.read_text().splitlines(keepends=True) if spans_file.exists() else []
        found = [json.loads(line) for line in lines if line.endswith("\n")]
        return {
            (s["attributes"]["messaging.message.id"], s["attributes"]["pgjobs.attempt"]): s
            for s in found
            if s["kind"] == "CONSUMER"
        }

    wanted = {(str(greet_id), 1), (str(flaky_id), 1), (str(flaky_id), 2), (str(async_id), 1)}
    consumers = wait_until(
        lambda: (found := worker_spans()).keys() >= wanted and found,
        timeout=20,
        message=lambda: f"spans: {worker_spans()}; {worker.describe()}",
    )

    for job_id, task in ((greet_id, "otel.greet"), (async_id, "otel.async_greet")):
        span = consumers[(str(job_id), 1)]
        producer = producers[str(job_id)]
        assert span["name"] == f"process {task}"
        assert span["links"] == [hex_ids(producer)]
        assert span["attributes"] == {
            "messaging.system": "pgjobs",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "default",
            "messaging.message.id": str(job_id),
            "pgjobs.task": task,
            "pgjobs.attempt": 1,
        }
        assert span["status"] == "UNSET"
    first, second = consumers[(str(flaky_id), 1)], consumers[(str(flaky_id), 2)]
    assert (first["status"], first["events"]) == ("ERROR", ["exception"])
    assert second["status"] == "UNSET"
    assert first["links"] == second["links"] == [hex_ids(producers[str(flaky_id)])]

    # the worker's JSON log lines carry the trace of the attempt they are about
    def log_line(message: str, job_id: int) -> dict[str, Any] | None:
        for entry in worker.json_logs():
            if entry["message"] == message and entry.get("job_id", job_id) == job_id:
                return entry
        return None

    greeting = wait_until(lambda: log_line("greeting", greet_id), message=worker.describe)
    failure = wait_until(lambda: log_line("job attempt failed", flaky_id), message=worker.describe)
    greet_span = consumers[(str(greet_id), 1)]
    assert (greeting["trace_id"], greeting["span_id"]) == (
        greet_span["trace_id"],
        greet_span["span_id"],
    )
    assert (failure["trace_id"], failure["span_id"]) == (first["trace_id"], first["span_id"])
    assert worker.stop() == 0


def hex_ids(span: ReadableSpan) -> dict[str, str]:
    trace_id, span_id = ids(span)
    return {"trace_id": trace.format_trace_id(trace_id), "span_id": trace.format_span_id(span_id)}


# --- the docs ---------------------------------------------------------------------------------


def test_the_docs_example_traces_a_job_from_its_producer_to_a_worker(
    database_url: str,
    schema: str,
    observer: Connection,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    section = doc_section("docs/opentelemetry.md", "Example")
    [example] = code_blocks(section, "python")
    assert "Save this as `otel_example.py`" in section
    (tmp_path / "otel_example.py").write_text(example)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    producer = subprocess.run(
        [sys.executable, "otel_example.py", "42"],
        cwd=tmp_path,
        env={**os.environ, "PGJOBS_DATABASE_URL": database_url, "PGJOBS_SCHEMA": schema},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert producer.returncode == 0, producer.stderr
    job_id = int(re.findall(r"^enqueued job (\d+)$", producer.stdout, re.MULTILINE)[0])
    printed = console_spans(producer.stdout)
    assert [span["name"] for span in printed] == ["send default", "signup"]
    send = printed[0]
    assert send["parent_id"] == printed[1]["context"]["span_id"]

    worker = start_worker(app="otel_example:app")
    wait_for_job(observer, schema, job_id, worker=worker)
    assert worker.stop() == 0  # the batch processor exports at exit
    by_name = {span["name"]: span for span in console_spans(worker.logs())}
    process = by_name["process send_welcome"]
    assert process["kind"] == "SpanKind.CONSUMER"
    assert [link["context"] for link in process["links"]] == [
        {**send["context"], "trace_state": "[]"}
    ]
    assert by_name["render email"]["parent_id"] == process["context"]["span_id"]


def console_spans(output: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (indented JSON objects) among other lines."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"^\{$", output, re.MULTILINE):
        span, _ = decoder.raw_decode(output, match.start())
        found.append(span)
    return found
