"""Workflows: jobs that run after other jobs, enqueued as one graph in one statement.

    wf = pgjobs.Workflow("import-42")
    a = wf.add(fetch, url=url)
    b = wf.add(parse, after=[a])
    ids = wf.enqueue(conn)          # every step, in the caller's transaction

A step waits (`blocked`) until its dependencies have completed; the statement that
records the last of them releases it. A failed or cancelled dependency cancels it,
and its own dependents after it, unless it was added with `run_if="finished"`. A step
can only wait for steps added before it, so a graph can never hold a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from pgjobs.data.producer import Inserted
from pgjobs.data.workflows import StepRow, insert_workflow
from pgjobs.enqueue import JobOptions
from pgjobs.enqueue_hooks import PlanOf, all_new, write, write_async
from pgjobs.errors import InvalidWorkflowError
from pgjobs.tasks import Task
from pgjobs.types import CallerConnection, JobRow

if TYPE_CHECKING:
    from pgjobs.app import App
    from pgjobs.data.steps import Plan

RUN_IF = ("completed", "finished")
# Options a step may set; a unique_key would let the insert skip a step of the graph.
STEP_OPTIONS = frozenset({"queue", "priority", "delay", "run_at", "max_attempts", "meta"})


@dataclass(eq=False)
class Step:
    """One step of a `Workflow`: pass it in another step's `after`. `job_id` is set once
    the workflow is enqueued."""

    workflow: Workflow
    name: str
    position: int  # from 1, in the order of `add`
    task: str
    arguments: Mapping[str, Any]
    run_if: str
    options: JobOptions
    after: tuple[Step, ...]
    job_id: int | None = None
    row: JobRow | None = field(default=None, repr=False)  # built once the App is known

    def __repr__(self) -> str:
        return f"<Step {self.name!r} of workflow {self.workflow.name!r}>"


@dataclass(eq=False)
class Workflow:
    """A graph of steps to enqueue together. `app` is needed only when every step is
    given by task name (a Task brings its App)."""

    name: str
    app: App | None = None
    steps: list[Step] = field(default_factory=list)
    id: int | None = None  # set by `enqueue`

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidWorkflowError(f"a workflow needs a non-empty name, got {self.name!r}")
        self._names: dict[str, Step] = {}

    def add(
        self,
        task: Task[Any, Any] | str,
        /,
        *,
        after: Iterable[Step | str] = (),
        run_if: str = "completed",
        name: str | None = None,
        options: Mapping[str, Any] | None = None,
        **arguments: Any,
    ) -> Step:
        """Add a step: `task` (a task, or a task name) with `arguments`, run once the
        steps in `after` (steps or step names of this workflow) have completed, or with
        `run_if="finished"` however they ended. `name` defaults to the task's name,
        suffixed `-2`, `-3`... when repeated. `options` are enqueue options (queue,
        priority, delay, run_at, max_attempts). Raises InvalidWorkflowError at once for
        an unknown step, a step of another workflow or a repeated name.
        """
        if self.id is not None:
            raise InvalidWorkflowError(
                f"workflow {self.name!r} is enqueued already; a running step adds steps "
                "with ctx.add_step"
            )
        task_name = step_task_name(task)
        if isinstance(task, Task):
            self.app = self.app or task.app  # type: ignore[assignment]
        step_name = self._step_name(name, task_name)
        check_run_if(step_name, run_if)
        step = Step(
            workflow=self,
            name=step_name,
            position=len(self.steps) + 1,
            task=task_name,
            arguments=dict(arguments),
            run_if=run_if,
            options=step_options(step_name, options),
            after=tuple(dict.fromkeys(self._dependency(step_name, item) for item in after)),
        )
        if self.app is not None:
            step.row = self._row(self.app, step)  # checked now, where the mistake is
        self.steps.append(step)
        self._names[step_name] = step
        return step

    def enqueue(self, conn: CallerConnection) -> list[int]:
        """Insert every step in one statement in `conn`'s transaction (None: pgjobs' own
        pool, committed at once); the steps' job ids in the order they were added."""
        app = self._app()
        rows = self._rows(app)
        run = partial(app._run, conn)
        return self._enqueued(write(app.hooks, rows, self._insert(app), _step_ids, run))

    async def enqueue_async(self, conn: CallerConnection) -> list[int]:
        """`enqueue` from async code, on an async connection (or None)."""
        app = self._app()
        rows = self._rows(app)
        run = partial(app._run_async, conn)
        return self._enqueued(await write_async(app.hooks, rows, self._insert(app), _step_ids, run))

    def _rows(self, app: App) -> list[JobRow]:
        """The steps' jobs, checked; `InvalidWorkflowError` if there is nothing to enqueue."""
        if not self.steps:
            raise InvalidWorkflowError(f"workflow {self.name!r} has no steps to enqueue")
        if self.id is not None:
            raise InvalidWorkflowError(f"workflow {self.name!r} is enqueued already")
        return [s.row or self._row(app, s) for s in self.steps]

    def _insert(self, app: App) -> PlanOf[tuple[int, list[int]]]:
        """The plan that inserts the steps with these jobs (as enqueue middleware left them)."""

        def plan(jobs: Sequence[JobRow]) -> Plan[tuple[int, list[int]]]:
            rows = [
                StepRow(job, s.name, s.run_if, tuple(d.position for d in s.after))
                for s, job in zip(self.steps, jobs, strict=True)
            ]
            yield from app.queue_limits.check(app.data.sql, jobs)
            return (yield from insert_workflow(app.data.sql, self.name, rows))

        return plan

    def _enqueued(self, inserted: tuple[int, list[int]]) -> list[int]:
        self.id, ids = inserted
        for step, job_id in zip(self.steps, ids, strict=True):
            step.job_id = job_id
        return ids

    def _app(self) -> App:
        if self.app is None:
            raise InvalidWorkflowError(
                f"workflow {self.name!r} names its tasks only by name: give it the App, "
                "Workflow(name, app=app)"
            )
        return self.app

    def _row(self, app: App, step: Step) -> JobRow:
        return app._row(step.task, step.arguments, step.options)

    def _step_name(self, name: str | None, task_name: str) -> str:
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise InvalidWorkflowError(
                    f"a step's name must be a non-empty string, got {name!r}"
                )
            if name in self._names:
                raise InvalidWorkflowError(
                    f"workflow {self.name!r} has a step named {name!r} already"
                )
            return name
        return unused_name(task_name, self._names)

    def _dependency(self, step_name: str, item: Step | str) -> Step:
        if isinstance(item, Step):
            if item.workflow is not self:
                raise InvalidWorkflowError(
                    f"step {step_name!r} waits for {item!r}, a step of another workflow"
                )
            return item
        found = self._names.get(item) if isinstance(item, str) else None
        if found is None:
            raise InvalidWorkflowError(
                f"step {step_name!r} waits for {item!r}, which is not a step of workflow "
                f"{self.name!r} (a step can wait only for steps added before it)"
            )
        return found


def step_task_name(task: object) -> str:
    """The task name of a step given a task or a task name."""
    task_name = task.name if isinstance(task, Task) else task
    if not isinstance(task_name, str):
        raise InvalidWorkflowError(f"a step's task must be a task or a task name, got {task!r}")
    return task_name


def check_run_if(step_name: str, run_if: object) -> None:
    """Refuse a `run_if` other than "completed" and "finished", naming the step."""
    if run_if not in RUN_IF:
        raise InvalidWorkflowError(
            f"step {step_name!r}: run_if must be 'completed' or 'finished', got {run_if!r}"
        )


def unused_name(base: str, taken: Mapping[str, Any]) -> str:
    """`base`, or `base-2`, `base-3`... the first not in `taken`."""
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def step_options(step_name: str, options: Mapping[str, Any] | None) -> JobOptions:
    """A step's enqueue options; a unique_key (or anything unknown) is refused."""
    if not options:
        return JobOptions()
    unknown = sorted(set(options) - STEP_OPTIONS)
    if unknown:
        raise InvalidWorkflowError(
            f"step {step_name!r}: options {unknown} are not allowed for a workflow step "
            f"(allowed: {', '.join(sorted(STEP_OPTIONS))})"
        )
    return JobOptions(**options)


def chain(
    name: str, *calls: tuple[Task[Any, Any] | str, Mapping[str, Any]], app: App | None = None
) -> Workflow:
    """A workflow of `calls` one after the other: `chain("w", (a, {...}), (b, {...}))`."""
    workflow = Workflow(name, app=app)
    previous: Sequence[Step] = ()
    for task, arguments in calls:
        previous = [workflow.add(task, after=previous, **arguments)]
    return workflow


def group(
    name: str,
    *calls: tuple[Task[Any, Any] | str, Mapping[str, Any]],
    then: tuple[Task[Any, Any] | str, Mapping[str, Any]] | None = None,
    app: App | None = None,
) -> Workflow:
    """A workflow of `calls` side by side, and optionally `then`, a step after them all
    (fan-out, fan-in): `group("w", (a, {...}), (a, {...}), then=(b, {...}))`."""
    workflow = Workflow(name, app=app)
    steps = [workflow.add(task, **arguments) for task, arguments in calls]
    if then is not None:
        workflow.add(then[0], after=steps, **then[1])
    return workflow


def _step_ids(inserted: tuple[int, list[int]]) -> Inserted:
    """A workflow's insert inserts every step."""
    return all_new(inserted[1])
