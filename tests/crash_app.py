"""The App of the durability test: each run appends "<job id> <attempt>" to a file.

The file lives outside the database on purpose: a run is recorded even when the server
crashes while it runs, so the test can count every time a task body ran.
"""

from __future__ import annotations

import os
import time

import pgjobs
from pgjobs import JobContext

app = pgjobs.App()


@app.task(name="touch", pass_context=True)
def touch(ctx: JobContext, pause: float = 0.0) -> None:
    """Record this run (one short line, appended in one write), then pause."""
    line = f"{ctx.job_id} {ctx.attempt}\n".encode()
    descriptor = os.open(os.environ["PGJOBS_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    time.sleep(pause)
