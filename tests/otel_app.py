"""The App that `pgjobs work` serves in tests/test_opentelemetry.py, traced by
`pgjobs.opentelemetry.instrument`. Its spans are written, one JSON object a line, to
the file `PGJOBS_TEST_SPANS` names, each at once as it ends (SimpleSpanProcessor), so
the test reads what the worker traced without a collector."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import pgjobs
from pgjobs.opentelemetry import instrument

SPANS_ENV = "PGJOBS_TEST_SPANS"
# Under `pgjobs`, so that the worker's log handler (--log-format json) prints it.
log = logging.getLogger("pgjobs.otel_app")


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    """What a test checks of a span, in JSON: ids in hex, as OpenTelemetry prints them."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
        "parent_span_id": None
        if span.parent is None
        else trace.format_span_id(span.parent.span_id),
        "links": [
            {
                "trace_id": trace.format_trace_id(link.context.trace_id),
                "span_id": trace.format_span_id(link.context.span_id),
            }
            for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_dict(span)) + "\n" for span in spans)
        with self._lock, open(self.path, "a") as file:
            file.write(lines)
        return SpanExportResult.SUCCESS


provider = TracerProvider()
if path := os.environ.get(SPANS_ENV):
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))

app = pgjobs.App(backoff=pgjobs.Backoff(base=0.05, factor=2.0, cap=0.1, jitter=0.0))
instrument(app, tracer_provider=provider)


@app.task(name="otel.greet", max_attempts=1)
def greet(name: str) -> str:
    """Logs a line inside its span (the log shows the span's ids)."""
    log.warning("greeting", extra={"person": name})
    return f"hello {name}"


@app.task(name="otel.flaky", max_attempts=2, pass_context=True)
def flaky(context: pgjobs.JobContext, marker: str) -> None:
    """Fails its first attempt, succeeds on the second."""
    if context.attempt == 1:
        raise RuntimeError(f"first attempt of {marker} fails")


@app.task(name="otel.async_greet", max_attempts=1)
async def async_greet(name: str) -> str:
    """An `async def` task, on the worker's event loop."""
    return f"hello {name}"
