"""The executor pool: a fixed set of threads that run claimed jobs.

A slot is one thread. It is taken when a job is claimed and given back only when the
task function returns, so a task that ignores its stop flag after a timeout keeps its
slot busy and the worker never runs more than `concurrency` tasks at once. Every attempt
is *settled* exactly once, by whichever comes first: the task returning, its timeout,
shutdown putting it back, or the heartbeat finding it cancelled. Whatever comes later
is ignored, so a late success after a timeout is never recorded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgjobs.errors import UnknownTaskError
from pgjobs.retry import Backoff
from pgjobs.tasks import JobContext, Task
from pgjobs.worker.jobs import ClaimedJob, Outcome, completed, put_back
from pgjobs.worker.outcomes import outcome_of_exception, outcome_of_timeout

log = logging.getLogger("pgjobs.worker")

WATCHDOG_INTERVAL = 0.05


@dataclass
class Attempt:
    """A running attempt and whether its outcome has been decided."""

    job: ClaimedJob
    context: JobContext
    timeout: float | None
    started: float
    settled: bool = False
    written: threading.Event | None = None  # set once the settled outcome is in the table
    lock: threading.Lock = field(default_factory=threading.Lock)


class ExecutorPool:
    """Runs jobs on `concurrency` threads and hands their outcomes to `report`."""

    def __init__(
        self,
        *,
        concurrency: int,
        tasks: dict[str, Task[Any, Any]],
        worker_id: str,
        report: Callable[[Outcome], threading.Event],
        backoff: Backoff,
        random: Callable[[], float],
        on_slot_freed: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.tasks = tasks
        self.worker_id = worker_id
        self.report = report
        self.backoff = backoff
        self.random = random
        self.on_slot_freed = on_slot_freed
        self.clock = clock
        self._inbox: queue.Queue[ClaimedJob] = queue.Queue()
        self._busy = 0
        self._attempts: dict[tuple[int, int], Attempt] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"pgjobs-executor-{n}", daemon=True)
            for n in range(concurrency)
        ]
        self._watchdog = threading.Thread(
            target=self._watch_deadlines, name="pgjobs-watchdog", daemon=True
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._watchdog.start()

    def free_slots(self) -> int:
        with self._lock:
            return self.concurrency - self._busy

    def busy(self) -> int:
        with self._lock:
            return self._busy

    def submit(self, job: ClaimedJob) -> None:
        """Run `job` on a free thread; the caller claimed at most `free_slots()` jobs."""
        with self._lock:
            if self._busy >= self.concurrency:
                raise RuntimeError("executor pool has no free slot")
            self._busy += 1
        self._inbox.put(job)

    def held_ids(self) -> list[int]:
        """Ids of jobs whose attempt is running here and not yet settled."""
        with self._lock:
            return [a.job.id for a in self._attempts.values() if not a.settled]

    def wait_idle(self, timeout: float, interrupted: threading.Event) -> bool:
        """Wait until every thread is free, `timeout` passes or `interrupted` is set."""
        deadline = self.clock() + timeout
        with self._idle:
            while self._busy and not interrupted.is_set():
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                self._idle.wait(min(remaining, 0.1))
            return self._busy == 0

    def put_back_all(self) -> int:
        """Settle every unfinished attempt as put back (shutdown); returns how many."""
        count = 0
        for attempt in self._snapshot():
            attempt.context.stop.set()
            if self._settle(attempt, put_back(attempt.job)) is not None:
                count += 1
                log.info("job put back", extra=self._fields(attempt))
        return count

    def forget(self, job_ids: set[int]) -> None:
        """The heartbeat found these jobs no longer ours (cancelled or rescued): stop them."""
        for attempt in self._snapshot():
            if attempt.job.id in job_ids:
                attempt.context.stop.set()
                if self._settle(attempt, None) is not None:
                    log.warning(
                        "job taken away (cancelled or rescued)", extra=self._fields(attempt)
                    )

    def stop(self) -> None:
        """Stop the watchdog; executor threads are daemons and end with the process."""
        self._stopped.set()

    def _snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts.values())

    def _fields(self, attempt: Attempt, **more: Any) -> dict[str, Any]:
        return {
            **attempt.job.log_fields(),
            "worker_id": self.worker_id,
            "duration": round(self.clock() - attempt.started, 6),
            **more,
        }

    def _settle(self, attempt: Attempt, outcome: Outcome | None) -> threading.Event | None:
        """Decide the attempt once; returns an event set when its outcome is written."""
        with attempt.lock:
            if attempt.settled:
                return None
            attempt.settled = True
            # Reported under the lock, so whoever finds the attempt settled finds the event.
            if outcome is None:
                attempt.written = threading.Event()
                attempt.written.set()
            else:
                attempt.written = self.report(outcome)
            return attempt.written

    def _work(self) -> None:
        while True:
            job = self._inbox.get()
            try:
                self._run(job)
            except Exception:
                # A bug of ours (tasks' errors are caught in _run): log it and keep the
                # thread, or the pool would shrink silently. The job is rescued later.
                log.exception("executor error", extra=job.log_fields())
            finally:
                with self._idle:
                    self._busy -= 1
                    self._attempts.pop((job.id, job.attempt), None)
                    self._idle.notify_all()
                self.on_slot_freed()

    def _run(self, job: ClaimedJob) -> None:
        task = self.tasks.get(job.task)
        timeout = task.timeout if task is not None else None
        started = self.clock()
        context = JobContext(
            job_id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            deadline=None if timeout is None else started + timeout,
            worker_id=self.worker_id,
        )
        attempt = Attempt(job, context, timeout, started)
        with self._lock:
            self._attempts[(job.id, job.attempt)] = attempt
        log.debug("job started", extra=self._fields(attempt))
        backoff = self._backoff_of(job.task)
        try:
            if task is None:
                raise UnknownTaskError(
                    f"unknown task {job.task!r}: it is not registered in this worker"
                )
            call_task(task, job.payload, context)
            outcome = completed(job)
        except BaseException as error:  # a task's SystemExit is its failure, not ours
            outcome = outcome_of_exception(
                job, error, backoff=backoff, random=self.random, worker_id=self.worker_id
            )
        written = self._settle(attempt, outcome)
        if written is not None:
            fields = self._fields(attempt, state=outcome.state)
            if outcome.error is not None:
                fields["error"] = outcome.error["error"]
            if outcome.state == "completed":
                log.info("job completed", extra=fields)
            elif outcome.state == "failed":
                log.error("job failed", extra=fields)
            elif outcome.error is None:
                log.info("job snoozed", extra={**fields, "retry_in": outcome.delay})
            else:
                log.warning("job attempt failed", extra={**fields, "retry_in": outcome.delay})
        else:
            log.info("late result ignored: attempt already settled", extra=self._fields(attempt))
            with attempt.lock:  # settled by its timeout (or shutdown, or cancellation)
                written = attempt.written
        # The slot stays taken until the outcome is in the table, whoever settled it, so
        # this worker never holds more claimed jobs than it has threads.
        if written is not None:
            written.wait()

    def _watch_deadlines(self) -> None:
        while not self._stopped.wait(WATCHDOG_INTERVAL):
            now = self.clock()
            for attempt in self._snapshot():
                if attempt.timeout is None or attempt.settled:
                    continue
                if now - attempt.started < attempt.timeout:
                    continue
                attempt.context.stop.set()
                backoff = self._backoff_of(attempt.job.task)
                outcome = outcome_of_timeout(
                    attempt.job,
                    attempt.timeout,
                    backoff=backoff,
                    random=self.random,
                    worker_id=self.worker_id,
                )
                if self._settle(attempt, outcome) is not None:
                    log.warning(
                        "job timed out",
                        extra=self._fields(attempt, state=outcome.state, retry_in=outcome.delay),
                    )

    def _backoff_of(self, task_name: str) -> Backoff:
        task = self.tasks.get(task_name)
        return (task.backoff if task is not None else None) or self.backoff


def call_task(task: Task[Any, Any], payload: dict[str, Any], context: JobContext) -> Any:
    """Call the task with its stored arguments, failing clearly when they do not fit."""
    leading = (context,) if task.pass_context else ()
    try:
        task.signature.bind(*leading, **payload)
    except TypeError as error:
        raise TypeError(
            f"arguments {sorted(payload)} do not fit task {task.name}{task.signature}: {error}"
        ) from None
    return task.func(*leading, **payload)
