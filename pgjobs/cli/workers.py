"""`pgjobs workers`: the live fleet from `<schema>.workers`, and the recently lost.

JSON output (`--json`) is one object: `workers` (live, oldest first) and `lost`, each a
list of `RegisteredWorker.as_dict()`.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pgjobs.cli.common import DatabaseUrlOption, JsonOption, SchemaOption, open_app
from pgjobs.cli.output import format_age, make_table, print_json, print_rich

if TYPE_CHECKING:
    from rich.console import RenderableType

    from pgjobs.types import RegisteredWorker


def workers(
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the running workers and the jobs each holds, then the recently lost ones.

    A worker is lost once it has sent no heartbeat for its --rescue-after (its jobs are
    then rescued); it stays listed for an hour. A worker that exits cleanly leaves the
    list at once.
    """
    from pgjobs.fleet import LOST_WORKER_RETENTION, list_workers

    with closing(open_app(database_url, schema)) as app:
        fleet = list_workers(app)
        schema_name = app.schema
    now = datetime.now(timezone.utc)
    live = [worker for worker in fleet if not worker.lost]
    lost = [worker for worker in fleet if worker.lost]
    if as_json:
        print_json(
            {
                "workers": [worker.as_dict(now) for worker in live],
                "lost": [worker.as_dict(now) for worker in lost],
            }
        )
        return
    if not fleet:
        print_rich(f"no workers registered in schema {schema_name!r}")
        return
    shown: list[RenderableType] = ["no live workers"]
    if live:
        threads = sum(worker.concurrency for worker in live)
        held = sum(len(worker.jobs) for worker in live)
        shown = [
            _live_table(live, now),
            f"{_count(len(live), 'worker')}, {threads} threads, holding {_count(held, 'job')}",
        ]
    if lost:
        hours = LOST_WORKER_RETENTION.total_seconds() / 3600
        shown += [
            "",
            f"lost (no heartbeat for their --rescue-after; listed for {hours:g}h):",
            _lost_table(lost, now),
        ]
    print_rich(*shown)


def _live_table(live: list[RegisteredWorker], now: datetime) -> RenderableType:
    table = make_table(
        "worker", "queues", "threads", "holding", "tasks", "up", "last beat",
        right=("threads", "holding", "up", "last beat"),
    )  # fmt: skip
    for worker in live:
        table.add_row(
            worker.id,
            ",".join(worker.queues) if worker.queues is not None else "*",
            str(worker.concurrency),
            str(len(worker.jobs)),
            _tasks(worker),
            format_age(now - worker.started_at),
            f"{format_age(worker.silent_for(now))} ago",
        )
    return table


def _lost_table(lost: list[RegisteredWorker], now: datetime) -> RenderableType:
    table = make_table("worker", "silent for", "holding", "tasks", right=("silent for", "holding"))
    for worker in lost:
        table.add_row(
            worker.id, format_age(worker.silent_for(now)), str(len(worker.jobs)), _tasks(worker)
        )
    return table


def _tasks(worker: RegisteredWorker) -> str:
    """`task count` pairs, busiest first: what the worker's held jobs are."""
    ranked = sorted(worker.tasks.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{task} {count}" for task, count in ranked) or "-"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
