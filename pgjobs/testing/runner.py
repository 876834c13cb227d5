"""Running jobs inline, in the test's thread, through the worker's own parts.

Nothing here decides what an attempt means. The fetcher claims (the worker's claim
statement), the executor pool runs a thread task and the async executor an `async def`
one (the same `begin`, timeout watchdog, `FailJob`/`SnoozeJob`/retry decisions), the
completer writes each outcome (the worker's guarded statements), and the event bus
logs it as the worker does. Only the pace differs: one job at a time, each outcome
written before the next job starts, all on the test's connection, so a test that rolls
back at the end leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgjobs.app import App
from pgjobs.bounds import MAX_DELAY_SECONDS, check_seconds, check_timestamp
from pgjobs.db import CallerConnection as Caller
from pgjobs.errors import RunawayJobsError, SnoozeJob
from pgjobs.testing.connections import CallerConnection
from pgjobs.worker.async_executor import AsyncExecutor
from pgjobs.worker.capacity import Capacity
from pgjobs.worker.completer import Completer
from pgjobs.worker.events import Ending, Event, EventBus, JobEnded
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.fetcher import Fetcher
from pgjobs.worker.jobs import ClaimedJob, Outcome, put_back, start_order
from pgjobs.worker.log_events import log_event, logged_event_types
from pgjobs.worker.queues import QueueSpec


@dataclass(frozen=True)
class RanJob:
    """One attempt a run settled: how it ended, what was written, what the task raised."""

    job: ClaimedJob
    ending: Ending
    outcome: Outcome | None
    error: BaseException | None = None


@dataclass(frozen=True)
class RunResult:
    """The attempts one `Jobs.run` settled, in order."""

    attempts: tuple[RanJob, ...] = field(default_factory=tuple)

    @property
    def counts(self) -> dict[str, int]:
        """Attempts by ending: `{"completed": 2, "retried": 1}` (endings that occurred)."""
        return dict(Counter(attempt.ending.value for attempt in self.attempts))

    def ids(self, ending: Ending | str | None = None) -> list[int]:
        """Ids of the jobs whose attempt ended so (every attempt's with None)."""
        wanted = None if ending is None else Ending(ending)
        return [a.job.id for a in self.attempts if wanted is None or a.ending is wanted]

    def raise_errors(self) -> None:
        """Raise what the first failed or timed-out attempt raised, to debug a test."""
        for attempt in self.attempts:
            if attempt.error is not None and not isinstance(attempt.error, SnoozeJob):
                raise attempt.error
            if attempt.ending is Ending.TIMED_OUT and attempt.outcome is not None:
                error = attempt.outcome.error or {}
                raise TimeoutError(f"job {attempt.job.id}: {error.get('error', 'timed out')}")

    def __len__(self) -> int:
        return len(self.attempts)


class _RecordingPool(ExecutorPool):
    """The executor pool, keeping what each task raised so that a test can re-raise it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raised: dict[tuple[int, int], BaseException] = {}

    def outcome_of(self, job: ClaimedJob, error: BaseException) -> Outcome:
        self.raised[(job.id, job.attempt)] = error
        return super().outcome_of(job, error)


@dataclass(frozen=True)
class Clock:
    """Which delayed jobs a run treats as due: by a moment, within seconds, or all."""

    until: datetime | None = None
    advance: float | None = None  # neither: every delayed job

    @classmethod
    def of(
        cls, until: datetime | None, advance: float | timedelta | None, delayed: bool
    ) -> Clock | None:
        """Check `Jobs.run`'s time options; None when only jobs due now should run."""
        if sum((until is not None, advance is not None, delayed)) > 1:
            raise ValueError("give at most one of until=, advance= and delayed=True")
        if until is not None:
            if not isinstance(until, datetime) or until.utcoffset() is None:
                raise ValueError(f"until must be an aware datetime, got {until!r}")
            check_timestamp("until", until)
        # Bounded like an enqueue's delay: the run's moment is now + advance, in SQL.
        seconds = (
            None
            if advance is None
            else check_seconds("advance", advance, maximum=MAX_DELAY_SECONDS)
        )
        if until is None and seconds is None and not delayed:
            return None
        return cls(until=until, advance=seconds)


class InlineRunner:
    """Claims, runs and records jobs of `app` on the caller's connection."""

    def __init__(
        self, app: App, conn: Caller, *, worker_id: str, random: Callable[[], float]
    ) -> None:
        self.app = app
        self.connection = CallerConnection(conn)
        self.worker_id = worker_id
        self.random = random

    def run(
        self,
        *,
        queues: Sequence[str] | None,
        clock: Clock | None,
        drain: bool,
        max_jobs: int,
    ) -> RunResult:
        """Run the due jobs (rounds of claims until none is due when `drain`)."""
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
            raise ValueError(f"max_jobs must be an integer >= 1, got {max_jobs!r}")
        if queues is not None and (isinstance(queues, str) or not queues):
            raise ValueError(f"queues must be a non-empty list of queue names, got {queues!r}")
        if any(task.is_async for task in self.app.tasks.values()) and _loop_running():
            raise RuntimeError(
                "Jobs.run runs async def tasks on an event loop of its own, and one is "
                "already running in this thread: call `await asyncio.to_thread(jobs.run)`"
            )
        parts = _Parts(self, queues)
        try:
            budget = max_jobs
            while True:
                if clock is not None:
                    self.app.store.make_due(
                        self.connection.caller, until=clock.until, advance=clock.advance
                    )
                # Every job claimed here runs at once, in this thread: all are ready.
                batch, _ = parts.fetcher.claim(max(budget, 1), begin=max(budget, 1))
                if not batch:
                    break
                if budget == 0:
                    parts.give_back(batch)
                    raise RunawayJobsError(
                        f"ran {max_jobs} attempts and jobs are still due (job {batch[0].id} "
                        f"of task {batch[0].task!r} next); a job that enqueues itself or "
                        "snoozes forever? Give run() a higher max_jobs if this is expected"
                    )
                for job in sorted(batch, key=start_order):
                    parts.run(job)
                budget -= len(batch)
                if not drain:
                    break
        finally:
            parts.close()
        return RunResult(tuple(parts.settled))


class _Parts:
    """The worker's parts for one run, wired as `Worker` wires them."""

    def __init__(self, runner: InlineRunner, queues: Sequence[str] | None) -> None:
        app = runner.app
        self.app = app
        async_tasks = frozenset(name for name, task in app.tasks.items() if task.is_async)
        self.capacity = Capacity(
            1, 0, async_slots=1 if async_tasks else 0, is_async=lambda j: j.task in async_tasks
        )
        self.events = EventBus()
        self.events.subscribe(log_event, *logged_event_types())
        self.events.subscribe(self._record, JobEnded)
        self.settled: list[RanJob] = []
        self.completer = Completer(
            runner.connection, app.store, runner.worker_id, self.events, flush_delay=0.0
        )
        self.pool = _RecordingPool(
            capacity=self.capacity,
            tasks=app.tasks,
            worker_id=runner.worker_id,
            report=self.completer.submit,
            events=self.events,
            backoff=app.backoff,
            random=runner.random,
        )
        self.async_executor = (
            AsyncExecutor(capacity=self.capacity, pool=self.pool, outcome_room=lambda: True)
            if async_tasks
            else None
        )
        spec = QueueSpec(None if queues is None else dict.fromkeys(queues, 1))
        self.fetcher = Fetcher(
            runner.connection,
            app.store,
            self.capacity,
            spec,
            runner.worker_id,
            poll_interval=1.0,
            random=runner.random,
            give_back=self.give_back,
        )
        self.pool.watchdog.start()  # times out attempts, as in a worker

    def run(self, job: ClaimedJob) -> None:
        """Run one claimed job to its settlement and write its outcome."""
        self.capacity.add([job], ready=[job.id])
        if self.async_executor is not None and self.capacity.is_async(job):
            self.async_executor.run_once()  # the loop runs in this thread until it ends
        else:
            self.pool.run_once()
        self.completer.flush()

    def give_back(self, jobs: Sequence[ClaimedJob]) -> None:
        """Return claimed jobs unrun, the attempt given back (as a worker's shutdown)."""
        for job in jobs:
            self.completer.submit(put_back(job))
        self.completer.flush()

    def close(self) -> None:
        self.pool.stop(1.0)
        self.completer.flush()
        if self.async_executor is not None:
            loop = self.async_executor.loop
            # An asyncio pool that tasks opened with enqueue_async(None, ...) belongs to
            # this loop, and closes with it.
            loop.run_until_complete(self.app.async_database.close())
            loop.close()

    def _record(self, event: Event) -> None:
        if isinstance(event, JobEnded) and event.ending is not Ending.LATE:
            # A timed-out coroutine raised the CancelledError that stopped it: not news.
            timed_out = event.ending is Ending.TIMED_OUT
            error = None if timed_out else self.pool.raised.get((event.job.id, event.job.attempt))
            self.settled.append(RanJob(event.job, event.ending, event.outcome, error))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
