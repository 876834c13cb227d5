"""The next version of `tests/periodic_app.py`, as a rolling deploy brings it: the same
`every_second` task, now scheduled every two seconds."""

from __future__ import annotations

import pgjobs
from pgjobs import JobContext
from tests.worker_app import record_run

app = pgjobs.App()


@app.periodic(every=2)
@app.task(name="every_second", pass_context=True)
def every_second(ctx: JobContext) -> None:
    """Records its run and the tick it was enqueued for."""
    record_run(ctx, ctx.scheduled_at.isoformat() if ctx.scheduled_at else None)
