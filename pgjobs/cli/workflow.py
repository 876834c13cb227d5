"""`pgjobs workflow ID`: a workflow's steps, their states and what each runs after.

JSON output (`--json`) is one object: `id`, `name`, `created_at`, `counts` (steps by
state) and `steps`, in the order they were added, each with `id`, `step`, `task`,
`queue`, `state`, `run_if`, `depends_on` (job ids), `after` (their step names),
`waiting_for` (dependencies not finished yet), `attempts`, `max_attempts`,
`started_at`, `finished_at`, `last_error` and `result`.
"""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, JsonOption, SchemaOption, open_app
from pgjobs.cli.output import first_line, format_time, make_table, print_json, print_rich, printable

if TYPE_CHECKING:
    from rich.table import Table

    from pgjobs.data.workflows import GraphStep, WorkflowGraph


def workflow(
    workflow_id: Annotated[
        int, typer.Argument(metavar="ID", help="The workflow's id (its steps' workflow_id).")
    ],
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a workflow: each step's job id, task, state, the steps it runs after,
    attempts and last error, under a line that counts the steps by state.

    A blocked step waits for the steps in its `after` column ("if finished": it runs
    however they end); a step cancelled because a dependency failed or was cancelled
    says which in its last error. `pgjobs show ID` shows one step with its result and
    attempt history; `pgjobs cancel --workflow ID` cancels the unfinished steps.
    """
    from pgjobs import admin

    with closing(open_app(database_url, schema)) as app:
        graph = admin.get_workflow(app, workflow_id)
    if as_json:
        print_json(graph.as_dict())
        return
    print_rich(_header(graph), *([_steps_table(graph.steps)] if graph.steps else []))


def _header(graph: WorkflowGraph) -> str:
    """E.g. "workflow 7 'import-42', enqueued 2026-12-06 10:00:00+00:00: 4 steps:
    2 completed, 1 running, 1 blocked"."""
    total = len(graph.steps)
    counts = ", ".join(f"{count} {state}" for state, count in graph.counts().items())
    steps = f"{total} {'step' if total == 1 else 'steps'}" + (f": {counts}" if counts else "")
    return (
        f"workflow {graph.id} {printable(repr(graph.name))}, "
        f"enqueued {format_time(graph.created_at)}: {steps}"
    )


def _steps_table(steps: list[GraphStep]) -> Table:
    from rich.text import Text

    from pgjobs.cli.inspect import _STATE_STYLES as STATE_STYLES
    from pgjobs.cli.inspect import _cut as cut
    from pgjobs.cli.inspect import _shrinking as shrinking
    from pgjobs.types import JobState

    table = make_table(
        "step", "id", shrinking("task"), "state", shrinking("after"), "attempts",
        shrinking("last error"), right=("id", "attempts"),
    )  # fmt: skip
    for step in steps:
        after = ", ".join(step.after) or "-"
        if step.after and step.run_if == "finished":
            after += " (if finished)"
        table.add_row(
            step.step,
            str(step.id),
            cut(step.task),
            Text(step.state, style=STATE_STYLES.get(JobState(step.state), "")),
            cut(after),
            f"{step.attempts}/{step.max_attempts}",
            cut(first_line(step.last_error, 200)),
        )
    return table
