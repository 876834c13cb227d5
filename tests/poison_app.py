"""The test App plus the reliability tests' own tasks: poison and oddly named ones.

Serve it with `--app tests.poison_app:app`; it is `tests.worker_app.app` with these
tasks added, so ordinary jobs run beside the poison ones in the same worker.
"""

from __future__ import annotations

import ctypes
import os
import time

from pgjobs import JobContext
from tests.worker_app import app, record_run

__all__ = ["app"]


@app.task(name="poison.exit", pass_context=True, max_attempts=2)
def exit_process(ctx: JobContext) -> None:
    """Ends the whole worker process at once, as a C extension calling exit() would."""
    record_run(ctx, "exit")
    os._exit(3)


@app.task(name="poison.segfault", pass_context=True, max_attempts=2)
def segfault(ctx: JobContext) -> None:
    """Crashes the worker process with SIGSEGV by reading address 0."""
    record_run(ctx, "segfault")
    ctypes.string_at(0)


@app.task(name="poison.hang", pass_context=True, timeout=0.5, max_attempts=2)
def hang(ctx: JobContext) -> None:
    """Never returns and never looks at its stop flag."""
    record_run(ctx, "hang")
    while True:
        time.sleep(1)


ODD_TASK_NAME = "tâsk'; drop table x;--"


@app.task(name=ODD_TASK_NAME, pass_context=True)
def oddly_named(ctx: JobContext, label: str) -> None:
    """A task whose name would break any SQL that pasted it in."""
    record_run(ctx, label)
