"""Workflows in a test: which workflow is meant, its steps as they are now, and why they
are not what the test expected.

A step is a job like any other, so running a workflow inline is `Jobs.run`'s drain: the
statement that records a step's outcome releases (or cancels) its dependents in the
test's transaction, and the next round of claims finds them. What this module adds is
reading the graph back (one statement, `pgjobs.data.workflows.workflow_steps`, the one
`pgjobs workflow` reads) and saying, step by step, how it differs from what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pgjobs.app import App
from pgjobs.data.connector import run
from pgjobs.data.workflows import workflow_steps
from pgjobs.errors import JobNotFoundError
from pgjobs.testing.matching import State, _states
from pgjobs.types import CallerConnection as Caller
from pgjobs.types import JobState
from pgjobs.workflows import Workflow

WorkflowRef = Workflow | int
FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


def workflow_id(workflow: WorkflowRef) -> int:
    """The id of `workflow` (an enqueued `Workflow`, or a workflow id)."""
    if isinstance(workflow, Workflow):
        if workflow.id is None:
            raise ValueError(
                f"workflow {workflow.name!r} is not enqueued yet: call its enqueue(conn) first"
            )
        return workflow.id
    if isinstance(workflow, bool) or not isinstance(workflow, int):
        raise ValueError(f"expected a pgjobs.Workflow or a workflow id, got {workflow!r}")
    return workflow


@dataclass(frozen=True)
class StepView:
    """One step of a workflow as it is now (a row of `workflow_steps`)."""

    id: int
    name: str
    task: str
    state: JobState
    run_if: str
    depends_on: tuple[int, ...]
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class WorkflowView:
    """A workflow's name and steps, in the order they were added."""

    id: int
    name: str
    steps: tuple[StepView, ...]

    @property
    def states(self) -> dict[str, JobState]:
        """{step name: state}, in the order the steps were added."""
        return {step.name: step.state for step in self.steps}

    def describe(self) -> str:
        """Every step on a line: state, attempts, what it waits for, its last error."""
        names = {step.id: step.name for step in self.steps}
        states = {step.id: step.state for step in self.steps}
        width = max((len(step.name) for step in self.steps), default=0)
        lines = []
        for step in self.steps:
            line = (
                f"  {step.name:<{width}}  #{step.id} {step.task} {step.state.value}, "
                f"attempts {step.attempts}"
            )
            if step.depends_on:
                after = ", ".join(names.get(i, f"job {i}") for i in step.depends_on)
                line += f", after {after}" + (" (run_if finished)" * (step.run_if == "finished"))
            waiting = [
                names.get(i, f"job {i}") for i in step.depends_on if states.get(i) not in FINISHED
            ]
            if step.state is JobState.BLOCKED and waiting:
                line += f"; waiting for {', '.join(waiting)}"
            if step.last_error:
                line += f"; last error: {step.last_error}"
            lines.append(line)
        return "\n".join(lines) if lines else "  (no step)"


def read_workflow(app: App, conn: Caller, workflow: WorkflowRef) -> WorkflowView:
    """`workflow` as `conn` sees it now; JobNotFoundError if it sees no such workflow."""
    wanted = workflow_id(workflow)
    rows = run(conn, app.schema, workflow_steps(app.data.sql, wanted))
    if not rows:
        raise JobNotFoundError(
            f"no workflow with id {wanted} (not enqueued, or not visible on this connection)"
        )
    steps = tuple(
        StepView(
            id=row["id"],
            name=row["step"],
            task=row["task"],
            state=JobState(row["state"]),
            run_if=row["run_if"],
            depends_on=tuple(row["depends_on"] or ()),
            attempts=row["attempts"],
            last_error=row["last_error"],
        )
        for row in rows
        if row["id"] is not None
    )
    return WorkflowView(wanted, rows[0]["name"], steps)


def expected_states(view: WorkflowView, states: Mapping[str, State] | None) -> dict[str, JobState]:
    """The state each step should be in: `states` checked (known states only), or every
    step `completed` when it is None."""
    if states is None:
        return dict.fromkeys(view.states, JobState.COMPLETED)
    if not isinstance(states, Mapping):
        raise ValueError(f"states must map step names to states, got {states!r}")
    expected: dict[str, JobState] = {}
    for name, state in states.items():
        checked = _states(state)
        if checked is None or len(checked) != 1:
            raise ValueError(f"step {name!r}: expected one state, got {state!r}")
        expected[name] = checked[0]
    return expected


def differences(view: WorkflowView, expected: Mapping[str, JobState]) -> list[str]:
    """One line per step that is not as expected (in step order, then missing ones)."""
    actual = view.states
    lines = []
    for name, state in actual.items():
        if name not in expected:
            lines.append(f"  {name}: {state.value}, not expected (no such step was listed)")
        elif expected[name] is not state:
            lines.append(f"  {name}: {state.value}, expected {expected[name].value}")
    lines += [
        f"  {name}: no such step, expected {state.value}"
        for name, state in expected.items()
        if name not in actual
    ]
    return lines


def assertion_message(view: WorkflowView, problems: list[str]) -> str:
    return (
        f"workflow {view.name!r} (id {view.id}) is not as expected:\n"
        + "\n".join(problems)
        + "\nIts steps:\n"
        + view.describe()
    )
