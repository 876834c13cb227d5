"""`pgjobs queues` and `pgjobs queue pause|resume|limit NAME`: queue control."""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgjobs.cli.common import (
    Command,
    DatabaseUrlOption,
    JsonOption,
    SchemaOption,
    command_group,
    open_app,
)
from pgjobs.cli.output import format_age, make_table, print_json, print_rich
from pgjobs.errors import ConfigurationError
from pgjobs.types import STATES

if TYPE_CHECKING:
    from pgjobs.data.inspect import QueueOverview

queue_cli = command_group(
    "queue",
    "Pause, resume or limit one queue (see `pgjobs queues` for all of them).",
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The queue's name.")]


def queues(
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every queue: jobs by state, oldest waiting age, paused or not, and its limits.

    A queue is listed once it has jobs or a setting. "Oldest waiting" is how long the
    longest-overdue available job has been runnable; "max waiting" is the most waiting
    (available) jobs it accepts before an enqueue raises QueueFull, "max running" the
    most of its jobs that run at once.
    """
    from pgjobs.queue_control import queue_overview

    with closing(open_app(database_url, schema)) as app:
        found = queue_overview(app)
        schema_name = app.schema
    if as_json:
        print_json([_queue_json(queue) for queue in found])
        return
    if not found:
        print_rich(f"no queues in schema {schema_name!r}")
        return
    names = [state.value for state in STATES]
    limits = ("max waiting", "max running")
    table = make_table(
        "queue", "paused", *limits, *names, "oldest waiting", right=(*limits, *names)
    )
    for queue in found:
        table.add_row(
            queue.stats.queue,
            "paused" if queue.paused else "-",
            _limit(queue.max_waiting),
            _limit(queue.max_running),
            *(str(queue.stats.counts[state]) for state in STATES),
            format_age(queue.stats.oldest_waiting),
        )
    print_rich(table)


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _queue_json(queue: QueueOverview) -> dict[str, Any]:
    return {
        "queue": queue.stats.queue,
        "paused": queue.paused,
        "max_waiting": queue.max_waiting,
        "max_running": queue.max_running,
        "counts": {state.value: count for state, count in queue.stats.counts.items()},
        "total": queue.stats.total,
        "oldest_waiting_seconds": queue.stats.oldest_waiting,
    }


@queue_cli.command(cls=Command)
def pause(
    name: NameArgument,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Stop every worker from claiming jobs of a queue; enqueueing still works.

    Workers see it at their next claim; jobs already claimed finish. It lasts, across
    restarts, until `pgjobs queue resume`.
    """
    from pgjobs.queue_control import pause_queue

    with closing(open_app(database_url, schema)) as app:
        pause_queue(app, name)
    print(f"paused queue {name!r}")


@queue_cli.command(cls=Command)
def resume(
    name: NameArgument,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Let workers claim from a paused queue again (they are woken at once).

    A queue that is not paused is left as it is (exit status 0).
    """
    from pgjobs.queue_control import resume_queue

    with closing(open_app(database_url, schema)) as app:
        resumed = resume_queue(app, name)
    print(f"resumed queue {name!r}" if resumed else f"queue {name!r} is not paused")


@queue_cli.command(cls=Command)
def limit(
    name: NameArgument,
    max_waiting: Annotated[
        int | None,
        typer.Option(
            "--max-waiting",
            metavar="N",
            help="Refuse enqueues (QueueFull) while N or more jobs wait in the queue.",
        ),
    ] = None,
    max_running: Annotated[
        int | None,
        typer.Option(
            "--max-running",
            metavar="N",
            help="Let workers run at most N jobs of the queue at once, all workers together.",
        ),
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="Remove both limits.")] = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Limit how many jobs may wait in a queue, or run at once; --none removes both.

    Each option changes only its own limit. Producers apply a new --max-waiting within a
    second; the count they check may be up to a second old (docs/queues.md,
    Back-pressure). Workers apply --max-running within a second.
    """
    from pgjobs.queue_control import set_queue_limit

    given = {"max_waiting": max_waiting, "max_running": max_running}
    if none == any(value is not None for value in given.values()):
        raise ConfigurationError("give --max-waiting N, --max-running N (or both), or --none")
    # A limit left out is left as it is; --none removes both.
    limits = dict.fromkeys(given) if none else {k: v for k, v in given.items() if v is not None}
    with closing(open_app(database_url, schema)) as app:
        set_queue_limit(app, name, **limits)
    if none:
        print(f"queue {name!r} has no limit")
    if max_waiting is not None:
        print(f"queue {name!r} accepts jobs while fewer than {max_waiting} wait")
    if max_running is not None:
        print(f"queue {name!r} runs at most {max_running} jobs at once")
