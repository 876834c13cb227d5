"""The executor pool: a fixed set of threads that run claimed jobs.

Each thread takes the next claimed job from the `ClaimBuffer`, runs it, hands the
outcome to the completer and takes the next one at once: writing outcomes is batched
elsewhere, so a thread never waits on the database. A task that ignores its stop flag
after a timeout keeps its thread, so the worker never runs more than `concurrency`
tasks at once.

Every attempt is *settled* exactly once, by whichever comes first: the task returning,
its timeout, shutdown putting it back, or the heartbeat finding it cancelled. Whatever
comes later is ignored, so a late success after a timeout is never recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from pgjobs.errors import FailJob, UnknownTaskError
from pgjobs.hooks import NO_MIDDLEWARE, AttemptMiddleware, JobInfo, run_through
from pgjobs.tasks import JobContext, Task
from pgjobs.types import ClaimedJob, Outcome
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.events import Ending, EventBus, JobEnded, JobStarted, ending_of
from pgjobs.worker.outcomes import OutcomePolicy, put_back
from pgjobs.worker.service import LoopService, Service, StopPhase
from pgjobs.workflow_steps import RunningStep

log = logging.getLogger("pgjobs.worker")

WATCHDOG_INTERVAL = 0.05
# While ready jobs wait, the watchdog also looks this often for threads
# stalled on a job expected to be short (`ClaimBuffer.unstall`); from rest, within its
# WATCHDOG_INTERVAL.
UNSTALL_INTERVAL = 0.005
# A job running this long has stalled its thread, as far as short jobs are concerned.
STALLED_AFTER = 0.01


@dataclass(slots=True)
class Attempt:
    """A running attempt and whether its outcome has been decided.

    Only a task that asks for it gets a `JobContext` (and its stop flag): nothing else
    could observe one, and at thousands of jobs a second it is measurable work.
    """

    job: ClaimedJob
    context: JobContext | None
    timeout: float | None
    started: float
    settled: bool = False
    cancel: Callable[[], None] | None = None  # interrupts a coroutine; threads cannot be

    def stop(self) -> None:
        """Tell the task, if it can hear it, that its attempt is over."""
        if self.context is not None:
            self.context.request_stop()
        if self.cancel is not None:
            self.cancel()


class ExecutorPool(Service):
    """Runs jobs from `buffer` on `concurrency` threads; outcomes go to `report`."""

    name = "executor"
    stop_phase = StopPhase.EXECUTION
    stop_timeout = 1.0

    def __init__(
        self,
        *,
        buffer: ClaimBuffer,
        policy: OutcomePolicy,
        report: Callable[[Outcome], None],
        events: EventBus,
        middleware: AttemptMiddleware = NO_MIDDLEWARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buffer = buffer
        self.middleware = middleware.sync  # around each attempt of a def task
        self.async_middleware = middleware.asynchronous  # of an async def task
        self.policy = policy
        self.report = report
        self.events = events
        self.clock = clock
        self.tasks, self.worker_id = policy.tasks, policy.worker_id  # read once per job
        self._attempts: dict[tuple[int, int], Attempt] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads = [
            threading.Thread(target=self._work, name=f"pgjobs-executor-{n}", daemon=True)
            for n in range(buffer.concurrency)
        ]
        self.watchdog = _Watchdog(self)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self.watchdog.start()

    def run_once(self) -> bool:
        """Run the next ready job in this thread; False when none was ready."""
        if not self.buffer.ready():
            return False
        job = self.buffer.take()
        if job is None:
            return False
        self._run_and_release(job)
        return True

    def stop(self, timeout: float) -> bool:
        """Stop the watchdog; executor threads end when the buffer is closed."""
        return self.watchdog.stop(timeout)

    def subservices(self) -> list[Service]:
        return [self.watchdog]

    def unsettled_ids(self) -> list[int]:
        """Ids of jobs whose attempt is running here and not yet settled."""
        return [job.id for job in self.unsettled_jobs()]

    def unsettled_jobs(self) -> list[ClaimedJob]:
        """Jobs whose attempt is running here and not yet settled."""
        with self._lock:
            return [a.job for a in self._attempts.values() if not a.settled]

    def wait_idle(self, timeout: float, interrupted: threading.Event) -> bool:
        """Wait until no task runs, `timeout` passes or `interrupted` is set."""
        deadline = self.clock() + timeout
        with self._idle:
            while self._attempts and not interrupted.is_set():
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                self._idle.wait(min(remaining, 0.1))
            return not self._attempts

    def put_back_unsettled(self) -> int:
        """Settle every running attempt as put back (shutdown); returns how many."""
        count = 0
        for attempt in self._snapshot():
            attempt.stop()
            if self._settle(attempt, put_back(attempt.job), Ending.PUT_BACK):
                count += 1
        return count

    def forget(
        self, job_ids: Collection[int] | Mapping[int, object], *, same_claim: bool = False
    ) -> None:
        """These jobs are no longer ours (cancelled or rescued): stop their tasks. With
        `same_claim`, `job_ids` maps each id to the claimed job that is lost, and an
        attempt of a later claim of the same job goes on."""
        claims = job_ids if isinstance(job_ids, Mapping) else {}
        for attempt in self._snapshot():
            if attempt.job.id in job_ids and (
                not same_claim or claims.get(attempt.job.id) is attempt.job
            ):
                attempt.stop()
                self._settle(attempt, None, Ending.TAKEN_AWAY)

    def check_deadlines(self) -> None:
        """Settle every attempt that ran past its timeout (the watchdog's pass), and tell
        the claim buffer of attempts running past its window (their task is slow)."""
        now = self.clock()
        window = self.buffer.window
        stalled = 0
        for attempt in self._snapshot():
            running_for = now - attempt.started
            # A thread's, settled or not: a task past its timeout may keep its thread.
            stalled += running_for > STALLED_AFTER and attempt.cancel is None
            if attempt.settled:
                continue
            if running_for > window:
                self.buffer.running_for(attempt.job.task, running_for)
            if attempt.timeout is None:
                continue
            if now - attempt.started < attempt.timeout:
                continue
            attempt.stop()
            outcome = self.policy.of_timeout(attempt.job, attempt.timeout)
            self._settle(attempt, outcome, Ending.TIMED_OUT)
        self.buffer.unstall(stalled)

    def _snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts.values())

    def _settle(
        self,
        attempt: Attempt,
        outcome: Outcome | None,
        ending: Ending,
        error: BaseException | None = None,
    ) -> bool:
        """Decide the attempt once: report its outcome and announce it. False if late."""
        with self._lock:
            if attempt.settled:
                return False
            attempt.settled = True
        if outcome is not None:
            self.report(outcome)
        self._announce(attempt, ending, outcome, error)
        return True

    def _announce(
        self,
        attempt: Attempt,
        ending: Ending,
        outcome: Outcome | None,
        error: BaseException | None,
    ) -> None:
        if self.events.wants(JobEnded):
            duration = self.clock() - attempt.started
            job = attempt.job
            ended = JobEnded(job, ending, outcome, duration, self.worker_id, time.time(), error)
            self.events.emit(ended)

    def _work(self) -> None:
        while (job := self.buffer.take()) is not None:
            try:
                self._run_and_release(job)
            except Exception:
                # A bug of pgjobs', not the task's (those are outcomes): the thread goes
                # on, and the attempt, if unsettled, is rescued once the worker is gone.
                log.exception("executor thread: unexpected error", extra=job.log_fields())

    def _run_and_release(self, job: ClaimedJob) -> None:
        started = self.clock()
        try:
            self._run(job)
        finally:
            self.release(job)
            self.buffer.done(job, self.clock() - started)

    def _run(self, job: ClaimedJob) -> None:
        task, attempt = self.begin(job)
        try:
            if task is None:
                raise UnknownTaskError(
                    f"unknown task {job.task!r}: it is not registered in this worker"
                )
            if self.middleware:
                call = partial(call_task, task, job.payload, attempt.context)
                value = run_through(self.middleware, JobInfo.of_claimed(job), call)
            else:
                value = call_task(task, job.payload, attempt.context)
            outcome = self.policy.of_return(job, task, value)
        except BaseException as error:  # a task's SystemExit is its failure, not ours
            self.end(attempt, self.policy.of_exception(job, error), error)
        else:
            self.end(attempt, outcome)

    def begin(
        self, job: ClaimedJob, *, cancel: Callable[[], None] | None = None
    ) -> tuple[Task[Any, Any] | None, Attempt]:
        """Register an attempt, so that timeouts, cancels and shutdown reach it, and
        announce it. The async executor's coroutines come through here too, with `cancel`.
        """
        task = self.tasks.get(job.task)
        timeout = task.timeout if task is not None else None
        started = self.clock()
        context = None
        if task is not None and task.pass_context:
            context = JobContext(
                job_id=job.id,
                task=job.task,
                queue=job.queue,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                deadline=None if timeout is None else started + timeout,
                worker_id=self.worker_id,
                scheduled_at=job.scheduled_at,
                workflow_id=job.workflow_id,
                step_access=None if job.workflow_id is None else RunningStep(task.app, job),
            )
        attempt = Attempt(job, context, timeout, started, cancel=cancel)
        with self._lock:
            self._attempts[(job.id, job.attempt)] = attempt
        if self.events.wants(JobStarted):
            self.events.emit(JobStarted(job, self.worker_id))
        return task, attempt

    def end(self, attempt: Attempt, outcome: Outcome, error: BaseException | None = None) -> None:
        """Settle the attempt with what its task did (returned, or raised `error`), unless
        it was settled already by its timeout, shutdown or cancellation."""
        if not self._settle(attempt, outcome, ending_of(outcome), error):
            self._announce(attempt, Ending.LATE, None, error)

    def release(self, job: ClaimedJob) -> None:
        """Forget a finished attempt (after `end`); `wait_idle` returns once none is left."""
        with self._idle:
            self._attempts.pop((job.id, job.attempt), None)
            if not self._attempts:
                self._idle.notify_all()


class _Watchdog(LoopService):
    """Ends attempts that run past their task's timeout, a few times a second, and keeps
    ready jobs from waiting behind a stalled thread."""

    def __init__(self, pool: ExecutorPool) -> None:
        super().__init__("watchdog", WATCHDOG_INTERVAL)
        self.pool = pool

    def run_once(self) -> None:
        self.pool.check_deadlines()

    def next_wait(self) -> float:
        return UNSTALL_INTERVAL if self.pool.buffer.has_ready() else self.interval


def call_task(task: Task[Any, Any], payload: dict[str, Any], context: JobContext | None) -> Any:
    """Call the task with its stored arguments, failing clearly when they do not fit."""
    leading = (context,) if context is not None else ()
    if task.limit_keys and (key := task.missing_limit_key(payload)) is not None:
        raise FailJob(
            f"task {task.name} is limited per value of its argument {key!r}, and this "
            "job's arguments do not give it (it counted in the bucket of an empty value)"
        )
    try:
        return task.func(*leading, **payload)
    except TypeError:
        # Checking first would cost every call; look only when the call itself failed:
        # InvalidJobError when the arguments are what did not fit, else the task's error.
        task.check_arguments(payload)
        raise
