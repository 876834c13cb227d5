"""A running workflow step's view of its workflow: its dependencies' results, its own
name, and steps it adds (fan-out decided at run time). Reached through `JobContext`.

Reads and additions go through the App's own pool, each committed at once: a step is
not a transaction. Additions are idempotent by step name, so an attempt that is retried
after adding steps finds them instead of adding them twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from pgjobs.data.producer import Inserted
from pgjobs.data.steps import Plan
from pgjobs.data.workflows import StepRow, add_step, dependency_results, step_name
from pgjobs.enqueue_hooks import same, write
from pgjobs.errors import InvalidWorkflowError
from pgjobs.types import ClaimedJob, JobRow
from pgjobs.workflows import check_run_if, step_options, step_task_name, unused_name


class RunningStep:
    """What `JobContext.results`, `.step` and `.add_step` do for one attempt of a step.

    `app` is the App the worker runs (typed loosely: the worker knows it only as its
    tasks' App).
    """

    def __init__(self, app: Any, job: ClaimedJob) -> None:
        assert job.workflow_id is not None
        self.app = app
        self.job = job
        self.workflow_id: int = job.workflow_id
        self._results: dict[str, Any] | None = None
        self._name: str | None = None
        self._added: dict[str, int] = {}

    def results(self) -> dict[str, Any]:
        if self._results is None:
            self._results = self.app._run(None, dependency_results(self.app.data.sql, self.job.id))
        return dict(self._results)

    def name(self) -> str:
        if self._name is None:
            self._name = self.app._run(None, step_name(self.app.data.sql, self.job.id))
        return self._name

    def add(
        self,
        task: Any,
        *,
        after: Iterable[str | int],
        name: str | None,
        run_if: str,
        options: Mapping[str, Any] | None,
        arguments: Mapping[str, Any],
    ) -> int:
        task_name = step_task_name(task)
        if name is None:
            # Named after this step, so a retried attempt names its steps the same.
            name = unused_name(f"{self.name()}.{task_name}", self._added)
        check_run_if(name, run_if)
        waits = list(after)
        names = [item for item in waits if isinstance(item, str)]
        ids = [item for item in waits if isinstance(item, int) and not isinstance(item, bool)]
        if len(names) + len(ids) != len(waits):
            raise InvalidWorkflowError(
                f"step {name!r}: after= takes step names or job ids, got {waits!r}"
            )
        row = self.app._row(task_name, arguments, step_options(name, options))

        def plan(jobs: Sequence[JobRow]) -> Plan[Inserted]:
            step = StepRow(jobs[0], name, run_if, ())
            adder = (self.job.id, self.job.attempt)
            added = yield from add_step(
                self.app.data.sql, self.workflow_id, step, names, ids, adder
            )
            return Inserted([added.id], [added.new])

        inserted = write(self.app.hooks, [row], plan, same, partial(self.app._run, None))
        job_id: int = inserted.ids[0]
        self._added[name] = job_id
        return job_id
