"""The App that the periodic-jobs tests' `pgjobs work` subprocesses serve.

`every_second` records each run in `<schema>.runs` (the `runs_table` fixture) with its
scheduled time as the label, so tests see which tick each job was enqueued for and what
the task's context said about it. `nightly` never comes due during a test.
"""

from __future__ import annotations

import pgjobs
from pgjobs import JobContext
from tests.worker_app import record_run

app = pgjobs.App()


@app.periodic(every=1)
@app.task(name="every_second", pass_context=True)
def every_second(ctx: JobContext) -> None:
    """Records its run and the tick it was enqueued for."""
    record_run(ctx, ctx.scheduled_at.isoformat() if ctx.scheduled_at else None)


@app.periodic(cron="0 3 * * *", timezone="Europe/Paris", args={"region": "eu"})
@app.task(name="nightly", queue="reports")
def nightly(region: str) -> None:
    """A nightly report (never due during a test)."""
