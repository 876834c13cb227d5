"""The App that `pgjobs work` subprocesses serve in the workflow tests.

Each step records its run in `<schema>.runs` (label: the step's name), so tests can see
what ran, in what order and how often; most store their result.
"""

from __future__ import annotations

import time
from typing import Any

import pgjobs
from pgjobs import JobContext
from tests.worker_app import record_run

app = pgjobs.App(backoff=pgjobs.Backoff(base=0.05, factor=2.0, cap=0.4, jitter=0.2))


@app.task(name="wf.step", pass_context=True, store_result=True)
def step(ctx: JobContext, value: Any = None, seconds: float = 0.0) -> Any:
    """Records its run, waits `seconds` (checking its stop flag), returns `value`."""
    record_run(ctx, ctx.step)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.should_stop():
        time.sleep(0.01)
    return value


@app.task(name="wf.fail", pass_context=True)
def fail(ctx: JobContext) -> None:
    """Records its run and fails for good."""
    record_run(ctx, ctx.step)
    raise pgjobs.FailJob("this step fails")


@app.task(name="wf.total", pass_context=True, store_result=True)
def total(ctx: JobContext) -> int:
    """The sum of its dependencies' results (a fan-in)."""
    record_run(ctx, ctx.step)
    return sum(value or 0 for value in ctx.results.values())


@app.task(name="wf.split", pass_context=True, store_result=True)
def split(ctx: JobContext, count: int) -> int:
    """Adds `count` squaring steps and a total after them (fan-out at run time)."""
    record_run(ctx, ctx.step)
    squares = [
        ctx.add_step("wf.step", name=f"square-{n}", after=[ctx.step], value=n * n)
        for n in range(1, count + 1)
    ]
    ctx.add_step("wf.total", name="sum", after=squares)
    return count


@app.task(name="wf.waits-for-cancel", pass_context=True)
def waits_for_cancel(ctx: JobContext) -> None:
    """Runs until it is cancelled, then tries to add a step: a cancelled step adds none."""
    record_run(ctx, ctx.step)
    deadline = time.monotonic() + 20
    while not ctx.should_stop() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        ctx.add_step("wf.step", name="late")
    except pgjobs.JobStateError:
        record_run(ctx, "refused")
