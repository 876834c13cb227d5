"""The App that bench/hooks.py's `pgjobs work` processes serve (`hooks_app:app`), and the
producers it times (`build`).

`BENCH_HOOKS` in the environment names what the App registers besides its one task,
`bench.noop` (a no-op):

- `none` (the default): nothing. This also runs on pgjobs before hooks existed (no
  `app.on`, no `app.middleware`), as bench/hooks.py's `--before` does.
- `hook`: one no-op `job_completed` handler.
- `all-hooks`: a no-op handler of every worker event (`pgjobs.hooks.WORKER_EVENTS`).
- `middleware`: one no-op `def` attempt middleware (it returns `call_next()`).
- `otel`: `pgjobs.opentelemetry.instrument(app, tracer_provider=...)` with an SDK
  `TracerProvider` whose `BatchSpanProcessor` (its defaults) exports to `null_exporter()`,
  which drops what it is given: the spans are made, ended and batched, sent nowhere.
- `enqueue-middleware`: one no-op enqueue middleware (a plain function).
- `enqueued-hook`: one no-op `job_enqueued` handler.

Each no-op counts its calls (`next()` of an `itertools.count`, atomic in CPython), and
the exporter the spans it was given, so that bench/hooks.py can check that what it
measured ran: with `BENCH_HOOKS_COUNTS` naming a folder, a worker writes
`<pid>.json` there as it exits ({what: calls}, after flushing its spans).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pgjobs

CONFIGS = (
    "none",
    "hook",
    "all-hooks",
    "middleware",
    "otel",
    "enqueue-middleware",
    "enqueued-hook",
)
WORKER_EVENTS = (  # pgjobs.hooks.WORKER_EVENTS, spelled out: pgjobs at --before has none
    "job_started",
    "job_completed",
    "job_retried",
    "job_failed",
    "job_snoozed",
    "job_cancelled",
    "worker_started",
    "worker_stopped",
)
_counters: dict[str, itertools.count[int]] = {}


def counted(name: str) -> Callable[[], object]:
    """The counter of `name`'s calls: call it to count one."""
    counter = _counters.setdefault(name, itertools.count())
    return counter.__next__


def counts() -> dict[str, int]:
    """{name: calls so far} (reading a count takes one)."""
    return {name: next(counter) for name, counter in _counters.items()}


def null_exporter() -> Any:
    """A span exporter that drops the spans it is given (and counts them); made here so
    that only `otel` imports the OpenTelemetry SDK."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    count = counted("spans exported")

    class NullExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            for _ in spans:
                count()
            return SpanExportResult.SUCCESS

    return NullExporter()


def configure(app: pgjobs.App, config: str) -> Any:
    """Register on `app` what `config` names; the TracerProvider of `otel` (else None)."""
    if config not in CONFIGS:
        raise ValueError(f"BENCH_HOOKS={config!r}: one of {', '.join(CONFIGS)}")
    if config in ("hook", "all-hooks", "enqueued-hook"):
        names = {
            "hook": ("job_completed",),
            "all-hooks": WORKER_EVENTS,
            "enqueued-hook": ("job_enqueued",),
        }[config]
        for name in names:
            count = counted(name)

            def handler(event: Any, count: Callable[[], object] = count) -> None:
                count()

            app.on(name)(handler)
    elif config == "middleware":
        count = counted("middleware")

        def middleware(job: Any, call_next: Callable[[], Any]) -> Any:
            count()
            return call_next()

        app.middleware(middleware)
    elif config == "enqueue-middleware":
        count = counted("enqueue middleware")

        def enqueue_middleware(jobs: list[Any]) -> None:
            count()

        app.enqueue_middleware(enqueue_middleware)
    elif config == "otel":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from pgjobs.opentelemetry import instrument

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(null_exporter()))
        instrument(app, tracer_provider=provider)
        return provider
    return None


def build(config: str, database_url: str | None = None, schema: str | None = None) -> Any:
    """An App with `bench.noop` and what `config` names: (the App, its TracerProvider
    or None)."""
    app_ = pgjobs.App(database_url, schema=schema)

    @app_.task(name="bench.noop")
    def noop(n: int = 0) -> None:
        """Does nothing."""

    return app_, configure(app_, config)


app, _provider = build(os.environ.get("BENCH_HOOKS", "none"))


def _write_counts() -> None:
    """Flush the spans, then write the counts (`BENCH_HOOKS_COUNTS`), at the exit."""
    if _provider is not None:
        _provider.force_flush()
    folder = os.environ.get("BENCH_HOOKS_COUNTS")
    if folder:
        (Path(folder) / f"{os.getpid()}.json").write_text(json.dumps(counts()))


atexit.register(_write_counts)
