"""`Jobs`: one object a test holds to see what its code enqueued and to run it."""

from __future__ import annotations

import random as random_module
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pgjobs.app import App
from pgjobs.data.connector import caller_psycopg_connection
from pgjobs.db import connect
from pgjobs.errors import JobNotFoundError
from pgjobs.tasks import Task
from pgjobs.testing.connections import enqueues_into
from pgjobs.testing.matching import JobFilters, JobPattern, describe_job
from pgjobs.testing.periodic import enqueue_periodic
from pgjobs.testing.runner import Clock, InlineRunner, RunResult
from pgjobs.testing.workflows import (
    WorkflowRef,
    assertion_message,
    differences,
    expected_states,
    read_workflow,
)
from pgjobs.types import CallerConnection as Caller
from pgjobs.types import Job, JobState
from pgjobs.worker.periodic import Tick
from pgjobs.worker.settings import new_worker_id

if TYPE_CHECKING:
    from pgjobs.enqueue import Unpack
    from pgjobs.testing.matching import State

# Jobs a query reads for one assertion at most; a test's queue holds far fewer.
_SCAN_LIMIT = 10_000
# Jobs of the same task a failed assertion lists, to show what was there instead.
_SHOWN = 10


class Jobs:
    """pgjobs for an application's tests, on its real database.

    `conn` is the connection the test works on: a psycopg Connection or a SQLAlchemy
    Connection or Session, usually in a transaction the test rolls back at the end.
    Reads go through it, so they see what the test has not committed; jobs run on it,
    and while the helper is open `enqueue(None, ...)` through `app` goes into its
    transaction too, so nothing escapes the rollback. With `conn=None` the helper opens
    its own autocommit connection and sees only committed jobs, like a worker.
    """

    def __init__(
        self,
        app: App,
        conn: Caller = None,
        *,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self.app = app
        self._resources = ExitStack()
        if conn is None:
            conn = self._resources.enter_context(connect(app.database.url, autocommit=True))
        else:
            self._resources.enter_context(enqueues_into(app, conn))
        self.conn = conn
        self.worker_id = f"testing:{new_worker_id()}"
        self._runner = InlineRunner(app, conn, worker_id=self.worker_id, random=random)

    # --- what was enqueued ---------------------------------------------------------------

    def find(
        self,
        task: Task[Any, Any] | str | None = None,
        args: Mapping[str, Any] | None = None,
        **filters: Unpack[JobFilters],
    ) -> list[Job]:
        """The jobs that match, oldest first (by default only waiting ones)."""
        pattern = JobPattern.build(task, args, filters)
        return [job for job in self._candidates(pattern) if pattern.matches(job)]

    def assert_enqueued(
        self,
        task: Task[Any, Any] | str | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        count: int | None = None,
        **filters: Unpack[JobFilters],
    ) -> list[Job]:
        """Fail unless jobs match (exactly `count` of them, if given); returns them.

        `args` need only be a subset of the job's arguments. By default only jobs still
        waiting (`available`) count; `state=None` counts every state.
        """
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise ValueError(f"count must be an integer, got {count!r}")
        pattern = JobPattern.build(task, args, filters)
        found = [job for job in self._candidates(pattern) if pattern.matches(job)]
        if (count is None and found) or len(found) == count:
            return found
        expected = "a job" if count is None else f"{count} job{'s' * (count != 1)}"
        raise AssertionError(
            f"expected {expected} matching {pattern.describe()}; found {len(found)}"
            + self._near_misses(pattern, found)
        )

    def assert_not_enqueued(
        self,
        task: Task[Any, Any] | str | None = None,
        args: Mapping[str, Any] | None = None,
        **filters: Unpack[JobFilters],
    ) -> None:
        """Fail if any job matches; with no arguments, if any job is waiting at all."""
        pattern = JobPattern.build(task, args, filters)
        found = [job for job in self._candidates(pattern) if pattern.matches(job)]
        if found:
            listed = "".join(f"\n  {describe_job(job)}" for job in found[:_SHOWN])
            raise AssertionError(
                f"expected no job matching {pattern.describe()}; found {len(found)}:{listed}"
            )

    def get(self, job_id: int) -> Job:
        """A job as it is now (to check its state, attempts or errors after a run)."""
        job: Job | None = self.app.data.inspect.get_job(
            caller_psycopg_connection(self.conn), job_id
        )
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return job

    # --- running them --------------------------------------------------------------------

    def run(
        self,
        *,
        queues: Sequence[str] | None = None,
        until: datetime | None = None,
        advance: float | timedelta | None = None,
        delayed: bool = False,
        drain: bool = False,
        max_jobs: int = 100,
    ) -> RunResult:
        """Run the jobs due now in this thread, as a worker would, one at a time.

        Each attempt is claimed, run and recorded by the worker's own code: retries with
        backoff, `FailJob`, `SnoozeJob`, timeouts and unknown tasks end as they would in
        `pgjobs work`. Time: `until` (an aware datetime) or `advance` (seconds or a
        timedelta from now) also runs the delayed jobs due by then, `delayed=True` every
        delayed job. `drain=True` claims again until nothing is due, so jobs these jobs
        enqueue, and retries that come due, run too; it stops with `RunawayJobsError`
        after `max_jobs` attempts. `queues` limits the run to those queues.
        """
        clock = Clock.of(until, advance, delayed)
        return self._runner.run(queues=queues, clock=clock, drain=drain, max_jobs=max_jobs)

    def run_workflow(
        self,
        workflow: WorkflowRef,
        *,
        queues: Sequence[str] | None = None,
        until: datetime | None = None,
        advance: float | timedelta | None = None,
        delayed: bool = False,
        max_jobs: int | None = None,
    ) -> RunResult:
        """Run a workflow (a `Workflow` enqueued on this connection, or its id) to its
        end: `run(drain=True)`, so each step runs once the statement that records its
        last dependency has released it, and steps that steps add run too.

        Like a worker, it runs every job due, not only the workflow's steps (a step's
        own enqueues included): `queues` narrows it. `max_jobs` defaults to 100 plus the
        workflow's steps. Time options as for `run`. Check the outcome with
        `assert_workflow`; a step still waiting afterwards (delayed, in another queue,
        or blocked behind one) is left as it is.
        """
        view = read_workflow(self.app, self.conn, workflow)
        budget = 100 + len(view.steps) if max_jobs is None else max_jobs
        return self.run(
            queues=queues,
            until=until,
            advance=advance,
            delayed=delayed,
            drain=True,
            max_jobs=budget,
        )

    def workflow_states(self, workflow: WorkflowRef) -> dict[str, JobState]:
        """{step name: state} of a workflow's steps now, in the order they were added
        (steps added at run time included). States compare equal to their text."""
        return read_workflow(self.app, self.conn, workflow).states

    def workflow_steps(self, workflow: WorkflowRef) -> dict[str, Job]:
        """{step name: `Job`} of a workflow's steps now, in the order they were added:
        each with its `state`, `result`, `errors`, `attempts`, `depends_on`."""
        view = read_workflow(self.app, self.conn, workflow)
        return {step.name: self.get(step.id) for step in view.steps}

    def workflow_results(self, workflow: WorkflowRef) -> dict[str, Any]:
        """{step name: stored result} (None for a step that stores none or has not
        completed)."""
        return {name: job.result for name, job in self.workflow_steps(workflow).items()}

    def assert_workflow(
        self, workflow: WorkflowRef, states: Mapping[str, State] | None = None
    ) -> dict[str, JobState]:
        """Fail unless the workflow's steps are in exactly these states: `states` maps
        every step name (steps added at run time too) to its state; None means every
        step `completed`. The message lists each step that differs, then the whole graph
        with each step's state, what it still waits for and its last error. Returns the
        states."""
        view = read_workflow(self.app, self.conn, workflow)
        problems = differences(view, expected_states(view, states))
        if problems:
            raise AssertionError(assertion_message(view, problems))
        return view.states

    def enqueue_periodic(self, at: datetime | None = None) -> list[Tick]:
        """Enqueue what the App's periodic schedules have due at `at` (default now), as a
        worker running since before then would; `run(until=at)` then runs them."""
        return enqueue_periodic(self.app, self.conn, at or datetime.now(timezone.utc))

    # --- life cycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Give the App its own pool back (and close the helper's own connection)."""
        self._resources.close()

    def __enter__(self) -> Jobs:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _candidates(self, pattern: JobPattern) -> list[Job]:
        """The jobs the database narrows down for `pattern`, oldest first."""
        newest_first: list[Job] = self.app.data.inspect.list_jobs(
            self.conn,
            states=None if pattern.states is None else [s.value for s in pattern.states],
            queues=None if pattern.queue is None else [pattern.queue],
            tasks=None if pattern.task is None else [pattern.task],
            limit=_SCAN_LIMIT,
        )
        return newest_first[::-1]

    def _near_misses(self, pattern: JobPattern, found: list[Job]) -> str:
        """What was there instead: jobs of the same task (or any), and why they differ."""
        others = self.app.data.inspect.list_jobs(
            self.conn,
            states=None,
            queues=None,
            tasks=None if pattern.task is None else [pattern.task],
            limit=_SHOWN,
        )[::-1]
        if not others:
            return "; there are no jobs" + (f" of task {pattern.task!r}" if pattern.task else "")
        lines = []
        for job in others:
            why = pattern.mismatches(job)
            lines.append(f"\n  {describe_job(job)}" + (f": {'; '.join(why)}" if why else ""))
        which = f"of task {pattern.task!r}" if pattern.task else "in the queue"
        return f". The newest jobs {which}:" + "".join(lines)
