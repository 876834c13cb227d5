"""A plain asyncio program that enqueues jobs, and the tasks a worker runs for it.

`async def` tasks run on the worker's event loop, many at once; plain functions run on
its threads. Both kinds come from the same App and the same `pgjobs work`.

    export PGJOBS_DATABASE_URL=$(pgjobs url)
    pgjobs migrate
    python examples/asyncio_script.py 5                # enqueue 5 reports, one transaction
    pgjobs work --app examples.asyncio_script:app      # run them
"""

from __future__ import annotations

import asyncio
import sys

import psycopg

import pgjobs

app = pgjobs.App()


# Explicit names: run as a script this module is `__main__`, in the worker it is not.
@app.task(name="reports.build", queue="reports", timeout=60, pass_context=True)
async def build_report(ctx: pgjobs.JobContext, report_id: int) -> None:
    """I/O-bound work: each await lets the worker's other coroutines run."""
    for _page in range(3):
        await asyncio.sleep(0.01)  # stands for a query or an HTTP call
    await archive.enqueue_async(None, report_id=report_id)  # pgjobs' own asyncio pool


@app.task(name="reports.archive", queue="reports")
def archive(report_id: int) -> None:
    """A plain function, for blocking work: it runs on the worker's threads."""


async def main(count: int) -> list[int]:
    reports = [("reports.build", {"report_id": n}) for n in range(count)]
    async with await psycopg.AsyncConnection.connect(app.database.url) as conn:
        ids = await app.enqueue_many_async(conn, reports)
        await conn.commit()  # the jobs exist from here on, with whatever else it wrote
    await app.aclose()
    return ids


if __name__ == "__main__":
    print(*asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
