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
    """Every queue: jobs by state, oldest waiting age, paused or not, and its limit.

    A queue is listed once it has jobs or a setting. "Oldest waiting" is how long the
    longest-overdue available job has been runnable; "limit" is the most waiting
    (available) jobs it accepts before an enqueue raises QueueFull.
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
    table = make_table(
        "queue", "paused", "limit", *names, "oldest waiting", right=("limit", *names)
    )
    for queue in found:
        table.add_row(
            queue.stats.queue,
            "paused" if queue.paused else "-",
            "-" if queue.max_waiting is None else str(queue.max_waiting),
            *(str(queue.stats.counts[state]) for state in STATES),
            format_age(queue.stats.oldest_waiting),
        )
    print_rich(table)


def _queue_json(queue: QueueOverview) -> dict[str, Any]:
    return {
        "queue": queue.stats.queue,
        "paused": queue.paused,
        "max_waiting": queue.max_waiting,
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
    none: Annotated[bool, typer.Option("--none", help="Remove the limit.")] = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Limit how many jobs may wait in a queue, or remove the limit with --none.

    Producers apply a new limit within a second; the count they check may be up to a
    second old (docs/queues.md, Back-pressure).
    """
    from pgjobs.queue_control import set_queue_limit

    if (max_waiting is None) == (not none):
        raise ConfigurationError("give either --max-waiting N or --none")
    with closing(open_app(database_url, schema)) as app:
        set_queue_limit(app, name, max_waiting)
    if max_waiting is None:
        print(f"queue {name!r} has no limit")
    else:
        print(f"queue {name!r} accepts jobs while fewer than {max_waiting} wait")
