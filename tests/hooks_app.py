"""The App that `pgjobs work` subprocesses serve in the hooks tests.

Every hook and middleware writes one JSON line to the file named by
`PGJOBS_TEST_HOOKS_FILE`, so that the test reads what ran in the worker process, once
each, in order. One hook raises and one hangs, to show neither changes an outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pgjobs
from pgjobs import Event, JobContext, JobInfo
from pgjobs.hooks import WORKER_EVENTS

app = pgjobs.App(backoff=pgjobs.Backoff(base=0.05, factor=1.0, cap=0.05, jitter=0.0))
_lock = threading.Lock()


def record(kind: str, **fields: Any) -> None:
    """Append one line to the test's file (each line whole: one write under a lock)."""
    line = json.dumps({"kind": kind, "pid": os.getpid(), **fields}, default=str) + "\n"
    with _lock, open(os.environ["PGJOBS_TEST_HOOKS_FILE"], "a") as file:
        file.write(line)


@app.task(name="hooks.ok")
def ok(n: int, hang: float = 0) -> int:
    record("task", task="hooks.ok", n=n)
    return n


@app.task(name="hooks.fails", max_attempts=2)
def fails() -> None:
    raise ValueError("boom")


@app.task(name="hooks.snoozes", pass_context=True)
def snoozes(ctx: JobContext) -> None:
    if ctx.attempt == 1:
        raise pgjobs.SnoozeJob(0.05)


@app.task(name="hooks.slow", pass_context=True)
def slow(ctx: JobContext) -> None:
    record("task", task="hooks.slow", job_id=ctx.job_id)
    while not ctx.should_stop():
        time.sleep(0.01)


@app.task(name="hooks.times_out", timeout=0.2, max_attempts=1, pass_context=True)
def times_out(ctx: JobContext) -> None:
    while not ctx.should_stop():
        time.sleep(0.01)


@app.task(name="hooks.async_ok")
async def async_ok(n: int) -> int:
    await asyncio.sleep(0)
    record("task", task="hooks.async_ok", n=n)
    return n


def _event_fields(event: Event) -> dict[str, Any]:
    job = event.job
    fields: dict[str, Any] = {
        "name": event.name,
        "worker_id": event.worker_id,
        "duration": event.duration,
        "retry_in": event.retry_in,
        "exception": None if event.exception is None else repr(event.exception),
    }
    if job is not None:
        fields.update(
            job_id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            args=job.args,
            meta=job.meta,
        )
    return fields


for _name in sorted(WORKER_EVENTS):

    @app.on(_name)
    def _recorded(event: Event) -> None:
        record("event", **_event_fields(event))


@app.on("job_completed")
def _raises(event: Event) -> None:
    raise RuntimeError("a broken hook")


@app.on("job_failed")
async def _async_hook(event: Event) -> None:
    await asyncio.sleep(0)
    record("async_hook", job_id=event.job.id if event.job else None)


@app.on("job_completed")
def _hangs_once(event: Event) -> None:
    """Hangs for a while on the job that asks for it: the others still complete."""
    if event.job is not None and event.job.args.get("hang"):
        time.sleep(float(event.job.args["hang"]))


@app.middleware
def outer(job: JobInfo, call_next: Callable[[], Any]) -> Any:
    record("middleware", name="outer", phase="before", job_id=job.id, meta=job.meta)
    try:
        return call_next()
    finally:
        record("middleware", name="outer", phase="after", job_id=job.id)


@app.middleware
def inner(job: JobInfo, call_next: Callable[[], Any]) -> Any:
    record("middleware", name="inner", phase="before", job_id=job.id)
    value = call_next()
    record("middleware", name="inner", phase="after", job_id=job.id, value=value)
    return value


@app.middleware
async def async_middleware(job: JobInfo, call_next: Callable[[], Any]) -> Any:
    record("middleware", name="async", phase="before", job_id=job.id)
    value = await call_next()
    record("middleware", name="async", phase="after", job_id=job.id, value=value)
    return value
