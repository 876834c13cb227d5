"""Running jobs inline, in the test's thread, through the worker's own parts.

Nothing here decides what an attempt means, nor builds a part: the worker's assembly
builds its data path (`DataPath`) on the test's connection. Its `Claims` claim (the
worker's claim statement), the executor pool runs a thread task and the async executor
an `async def` one (the same `begin`, timeout watchdog, `FailJob`/`SnoozeJob`/retry
decisions), the completer writes each outcome (the worker's guarded statements), and the
event bus logs it as the worker does. Only the pace differs: one job at a time, each
outcome written before the next job starts, all on the test's connection, so a test that
rolls back at the end leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgjobs.app import App
from pgjobs.bounds import MAX_DELAY_SECONDS, check_seconds, check_timestamp
from pgjobs.errors import RunawayJobsError, SnoozeJob
from pgjobs.testing.connections import BorrowedConnection
from pgjobs.types import CallerConnection as Caller
from pgjobs.types import ClaimedJob, Outcome
from pgjobs.worker.assembly import DataPath
from pgjobs.worker.claim_lines import start_order
from pgjobs.worker.events import Ending, Event, JobEnded
from pgjobs.worker.outcomes import put_back
from pgjobs.worker.queues import QueueSpec
from pgjobs.worker.settings import WorkerSettings


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
        self.connection = BorrowedConnection(conn)
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
                    self.app.data.admin.make_due(
                        self.connection.caller, until=clock.until, advance=clock.advance
                    )
                # Every job claimed here runs at once, in this thread: all are ready.
                batch, _ = parts.claims.claim(max(budget, 1), begin=max(budget, 1))
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
    """The worker's data path (`DataPath`, as a worker builds it) for one run, on the
    test's connection, paced inline: one job at a time, each outcome written at once."""

    def __init__(self, runner: InlineRunner, queues: Sequence[str] | None) -> None:
        settings = WorkerSettings(
            concurrency=1,
            prefetch=0,
            async_concurrency=1,
            queues=QueueSpec(None if queues is None else dict.fromkeys(queues, 1)),
        )
        self.path = DataPath(
            runner.app,
            settings,
            runner.worker_id,
            lambda part: runner.connection,
            random=runner.random,
            flush_delay=0.0,
            inline_hooks=True,
        )
        self.claims = self.path.claims
        self.settled: list[RanJob] = []
        self.path.events.subscribe(self._record, JobEnded)
        self.path.executor.watchdog.start()  # times out attempts, as in a worker

    def run(self, job: ClaimedJob) -> None:
        """Run one claimed job to its settlement and write its outcome."""
        path = self.path
        path.buffer.add([job], ready=[job.id])
        if path.async_executor is not None and path.buffer.is_async(job):
            path.async_executor.run_once()  # the loop runs in this thread until it ends
        else:
            path.executor.run_once()
        path.completer.flush()

    def give_back(self, jobs: Sequence[ClaimedJob]) -> None:
        """Return claimed jobs unrun, the attempt given back (as a worker's shutdown)."""
        for job in jobs:
            self.path.completer.submit(put_back(job))
        self.path.completer.flush()

    def close(self) -> None:
        self.path.executor.stop(1.0)
        self.path.completer.flush()
        if self.path.async_executor is not None:
            # Closes the asyncio pool that tasks opened with enqueue_async(None, ...): it
            # belongs to this loop.
            self.path.async_executor.stop(1.0)

    def _record(self, event: Event) -> None:
        if isinstance(event, JobEnded) and event.ending is not Ending.LATE:
            self.settled.append(RanJob(event.job, event.ending, event.outcome, event.error))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
