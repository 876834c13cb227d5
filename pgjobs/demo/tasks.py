"""The sample tasks and jobs of `pgjobs demo`.

The tasks stand in for real work (thumbnails, email, reports, billing): each sleeps for
0.05-0.3 s and decides whether it fails from its arguments and attempt number only, so
every run of the demo ends the same way. Serve them like any other tasks with
`pgjobs work --app pgjobs.demo.tasks:app`.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import date
from typing import Any

from pgjobs.app import App, BulkItem
from pgjobs.demo import DEMO_QUEUE, DEMO_SCHEMA
from pgjobs.retry import Backoff
from pgjobs.tasks import JobContext, Task

# Short retry delays (0.5 s, 1 s, 2 s, ...) so that the tour's retries happen while you watch.
app = App(schema=DEMO_SCHEMA, backoff=Backoff(base=0.5, cap=2), default_queue=DEMO_QUEUE)


def _simulate_work(key: str, shortest: float, longest: float) -> None:
    """Sleep for a duration between the bounds that depends only on `key`."""
    share = (zlib.crc32(key.encode()) % 1000) / 999
    time.sleep(shortest + (longest - shortest) * share)


@app.task(name="demo.resize_image")
def resize_image(path: str, width: int) -> str:
    """Write a thumbnail `width` pixels wide of the image at `path`; returns its path."""
    _simulate_work(path, 0.05, 0.3)
    folder, _, name = path.rpartition("/")
    stem, dot, extension = name.rpartition(".")
    return f"{folder}/thumbnails/{stem}_{width}w{dot}{extension}"


@app.task(name="demo.send_email", pass_context=True)
def send_email(ctx: JobContext, to: str, subject: str, refusals: int = 0) -> None:
    """Send one email.

    The demo's mail server refuses the first `refusals` attempts, the way a real one does
    while it restarts, so the job fails, waits out its backoff, and then succeeds.
    """
    _simulate_work(to + subject, 0.1, 0.2)
    if ctx.attempt <= refusals:
        raise ConnectionRefusedError(
            f"smtp.example.com:587 refused the connection (attempt {ctx.attempt})"
        )


@app.task(name="demo.build_report", max_attempts=3)
def build_report(month: str) -> None:
    """Build the sales report of `month` (YYYY-MM); a month that does not exist never will."""
    year, number = (int(part) for part in month.split("-"))
    first_day = date(year, number, 1)  # ValueError for a month that does not exist
    _simulate_work(first_day.isoformat(), 0.05, 0.2)


@app.task(name="demo.charge_card")
def charge_card(order_id: str, amount_cents: int) -> None:
    """Charge the card on file for an order."""
    _simulate_work(order_id, 0.1, 0.2)


@app.task(name="demo.expire_trial")
def expire_trial(account_id: int) -> None:
    """Close a trial account whose time is up."""
    _simulate_work(str(account_id), 0.05, 0.1)


@dataclass(frozen=True)
class SampleBatch:
    """Jobs of one task that the demo enqueues, and what the tour says about them."""

    task: Task[Any, Any]
    note: str
    calls: tuple[tuple[dict[str, Any], dict[str, Any]], ...]  # (arguments, options) each
    ends_failed: bool = False

    def items(self) -> list[BulkItem]:
        """The batch as `App.enqueue_many` items."""
        return [(self.task.name, arguments, options) for arguments, options in self.calls]


SAMPLES = (
    SampleBatch(
        resize_image,
        "thumbnails, 0.05-0.3 s each",
        tuple(({"path": f"uploads/photo_{n:03}.jpg", "width": 320}, {}) for n in range(1, 31)),
    ),
    SampleBatch(
        send_email,
        "the mail server refuses the first attempt or two: retried with backoff",
        tuple(
            ({"to": to, "subject": "Your order has shipped", "refusals": refusals}, {})
            for to, refusals in (
                ("ada@example.com", 1),
                ("grace@example.com", 2),
                ("edsger@example.com", 1),
            )
        ),
    ),
    SampleBatch(
        build_report,
        "asks for month 13: fails all 3 attempts and ends failed",
        (({"month": "2024-13"}, {}),),
        ends_failed=True,
    ),
    SampleBatch(
        expire_trial,
        "delayed by 3 s: waits, then runs",
        (({"account_id": 4217}, {"delay": 3}),),
    ),
    SampleBatch(
        charge_card,
        "priority 10: claimed before everything else",
        tuple(
            ({"order_id": order, "amount_cents": cents}, {"priority": 10})
            for order, cents in (("ord_1001", 4999), ("ord_1002", 1250))
        ),
    ),
)
