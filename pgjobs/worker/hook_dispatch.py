"""The worker's hooks: its events told to the App's handlers, on one dispatcher thread.

The executor threads and the completer emit events (events.py); this part turns the
ones a handler waits for into public `pgjobs.hooks.Event`s and queues them. One thread,
`pgjobs-hooks`, calls the handlers, in the order the events happened, after the fact:
a handler never holds an executor's slot and never delays an outcome's write. `async
def` handlers run to their end on the dispatcher's own event loop.

A handler that hangs holds up the ones after it (said in the log, naming it, once it
has run `SLOW_HOOK` seconds); once `MAX_WAITING` events wait, new ones are dropped and
counted, so a stuck hook can never grow the worker's memory nor stop its jobs.
`pgjobs.testing` delivers inline instead, in the test's thread, so a test sees what its
hooks did as soon as its jobs ran.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable
from typing import Any

from pgjobs.hooks import WORKER_EVENTS, Event, Hooks, JobInfo, finish_awaitable, handler_name
from pgjobs.types import JobState
from pgjobs.worker.events import (
    Ending,
    EventBus,
    JobEnded,
    JobStarted,
    WorkerStarted,
    WorkerStopped,
)

log = logging.getLogger("pgjobs.hooks")

MAX_WAITING = 10_000
SLOW_HOOK = 5.0  # seconds a handler runs before the log says it holds up the others

# The hook name of each way an attempt ends; a timeout is a retry or a failure as its
# outcome says, and a put-back (shutdown) or a late result is no event of the job.
_NAME_OF_ENDING = {
    Ending.COMPLETED: "job_completed",
    Ending.RETRIED: "job_retried",
    Ending.FAILED: "job_failed",
    Ending.SNOOZED: "job_snoozed",
    Ending.TAKEN_AWAY: "job_cancelled",
}
_FAILURES = ("job_retried", "job_failed")


class HookDispatcher:
    """Delivers a worker's events to `hooks`' handlers (only those that have one)."""

    def __init__(self, hooks: Hooks, events: EventBus, *, inline: bool = False) -> None:
        self.hooks = hooks
        self.inline = inline
        self.dropped = 0
        # A SimpleQueue: a tenth of a Queue's cost per event (no lock and condition in
        # Python); the bound is checked by its size.
        self._waiting: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._bound = MAX_WAITING
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: tuple[str, str, float] | None = None  # handler, event, since
        self._reported: tuple[str, str, float] | None = None
        if hooks.wants("job_started"):
            events.subscribe(self._started, JobStarted)
        if any(map(hooks.wants, (*_NAME_OF_ENDING.values(),))):
            events.subscribe(self._ended, JobEnded)
        if hooks.wants("worker_started"):
            events.subscribe(self._worker_started, WorkerStarted)
        if hooks.wants("worker_stopped"):
            events.subscribe(self._worker_stopped, WorkerStopped)

    @property
    def active(self) -> bool:
        """Whether any worker event has a handler (else no thread is started)."""
        return any(map(self.hooks.wants, WORKER_EVENTS))

    def start(self) -> None:
        """Start the dispatcher's thread (not in inline mode, nor without handlers)."""
        if self.inline or not self.active or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._serve, name="pgjobs-hooks", daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> bool:
        """Deliver what waits, within `timeout` seconds; True when all of it was."""
        thread = self._thread
        if thread is None:
            return True
        deadline = time.monotonic() + timeout
        self._waiting.put(None)
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            running = self._running
            log.warning(
                "hooks still running at exit; the events after it are not delivered",
                extra={"hook": running[0] if running else None, "waiting": self._waiting.qsize()},
            )
            return False
        return self.dropped == 0

    def send(self, event: Event) -> None:
        """Queue `event` for the dispatcher (deliver it now, inline)."""
        if self.inline:
            self._deliver(event)
            return
        self._check_slow()
        if self._waiting.qsize() < self._bound:
            self._waiting.put(event)
        else:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "hook events dropped: the hooks are behind by 10,000 events",
                    extra={"dropped": self.dropped, "event": event.name},
                )

    def _started(self, event: Any) -> None:
        assert isinstance(event, JobStarted)
        self.send(Event("job_started", JobInfo.of_claimed(event.job), event.worker_id))

    def _ended(self, event: Any) -> None:
        assert isinstance(event, JobEnded)
        name = _NAME_OF_ENDING.get(event.ending)
        outcome = event.outcome
        if event.ending is Ending.TIMED_OUT and outcome is not None:
            name = "job_failed" if outcome.state == JobState.FAILED else "job_retried"
        if name is None or not self.hooks.wants(name):
            return
        exception = None
        if name in _FAILURES:
            exception = event.error
            if exception is None and outcome is not None and outcome.error is not None:
                exception = TimeoutError(str(outcome.error["error"]).removeprefix("TimeoutError: "))
        retry_in = None
        if outcome is not None and outcome.state == JobState.AVAILABLE:
            retry_in = outcome.delay
        job = JobInfo.of_claimed(event.job)
        self.send(Event(name, job, event.worker_id, event.duration, exception, retry_in))

    def _worker_started(self, event: Any) -> None:
        self.send(Event("worker_started", worker_id=event.worker_id))

    def _worker_stopped(self, event: Any) -> None:
        self.send(Event("worker_stopped", worker_id=event.worker_id))

    def _serve(self) -> None:
        while (event := self._waiting.get()) is not None:
            self._deliver(event)
        if self._loop is not None:
            self._loop.close()

    def _deliver(self, event: Event) -> None:
        for handler in self.hooks.handlers.get(event.name, ()):
            self._running = (handler_name(handler), event.name, time.monotonic())
            self.hooks.call(handler, event, self._finish)
        self._running = None

    def _finish(self, awaitable: Awaitable[Any]) -> None:
        """Run an async handler to its end on the dispatcher's loop (inline: as the
        producer does, since a test may run async tasks on a loop in its thread)."""
        if self.inline:
            finish_awaitable(awaitable)
            return
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(_awaited(awaitable))

    def _check_slow(self) -> None:
        """Say, once per handler call, that a handler holds up the others."""
        running = self._running
        if running is None or running is self._reported:
            return
        hook, name, since = running
        if time.monotonic() - since >= SLOW_HOOK:
            self._reported = running
            log.warning(
                "a hook is slow: the events after it wait (hooks run one at a time)",
                extra={
                    "hook": hook,
                    "event": name,
                    "running_for": round(time.monotonic() - since, 1),
                },
            )


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable
