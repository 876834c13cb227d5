"""The async executor: runs `async def` tasks as coroutines on one event loop.

It works beside the executor threads. A claimed job of an `async def` task waits in its
own line of the `ClaimBuffer` and runs on this loop, in a thread of its own, with at most
`async_slots` running at once. Each attempt goes through the executor pool's registry
(`ExecutorPool.begin` and `end`). So the same watchdog times it out, the same heartbeat
keeps it alive and finds it cancelled, and shutdown waits for it and puts it back, as
for a thread. The one difference: a coroutine can be interrupted. Stopping its attempt
cancels it, so the task sees `asyncio.CancelledError` at its current `await`. Once the
worker cancelled it, whoever cancelled it (timeout, cancel, shutdown) decides the outcome.

A coroutine that blocks (a `time.sleep`, a synchronous driver, a long computation) stalls
every other coroutine on the loop. `LoopLagWatchdog` notices this and logs which job does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from functools import partial
from types import FrameType
from typing import Any

from pgjobs.hooks import JobInfo, run_through_async
from pgjobs.types import ClaimedJob
from pgjobs.worker.executor import ExecutorPool, call_task
from pgjobs.worker.service import LoopService, Service, StopPhase

log = logging.getLogger("pgjobs.worker")

# How long the loop may go without running a callback before the watchdog logs it.
DEFAULT_BLOCK_THRESHOLD = 0.25
# While the completer is full, a finished coroutine waits this long between looks.
_OUTCOME_ROOM_WAIT = 0.005


class AsyncExecutor(Service):
    """Runs the async jobs of the pool's buffer on an event loop; outcomes go through `pool`.

    `outcome_room()` says whether the completer takes another outcome without blocking:
    the loop must never wait on a lock, so a coroutine that finished while the completer
    is full waits asynchronously, and no new job starts meanwhile. `on_close` runs on the
    loop before it stops, to close what tasks opened on it (the App's asyncio pool).
    """

    name = "async-executor"
    stop_phase = StopPhase.EXECUTION
    stop_timeout = 1.0  # its coroutines were cancelled by the put-back before

    def __init__(
        self,
        *,
        pool: ExecutorPool,
        outcome_room: Callable[[], bool],
        on_close: Callable[[], Awaitable[object]] | None = None,
        block_threshold: float = DEFAULT_BLOCK_THRESHOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.outcome_room = outcome_room
        self.on_close = on_close
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="pgjobs-async", daemon=True)
        self._running: dict[asyncio.Task[None], ClaimedJob] = {}
        self._cancelled: set[asyncio.Task[None]] = set()  # by the worker, not by the task
        self._pump_scheduled = False
        self.lag_watchdog = LoopLagWatchdog(self, block_threshold, clock=clock)

    def start(self) -> None:
        self._thread.start()
        self.lag_watchdog.start()

    def wake(self) -> None:
        """Start waiting async jobs soon (from any thread: the fetcher calls it)."""
        self.call_soon(self._pump)

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop; nothing once the loop is closed."""
        with contextlib.suppress(RuntimeError):  # closed at shutdown
            self.loop.call_soon_threadsafe(callback)

    def run_once(self) -> int:
        """Start every async job that waits and has a slot; returns how many started.

        Before `start()` (in tests) the loop runs in this thread until they have ended.
        """
        if self._thread.is_alive():
            future: Future[int] = Future()
            self.call_soon(lambda: future.set_result(self._pump()))
            return future.result()
        started = self._pump()
        while self._running:
            self.loop.run_until_complete(asyncio.wait(list(self._running)))
        return started

    def stop(self, timeout: float) -> bool:
        """Let the coroutines that were cancelled end, then stop the loop and its thread.

        Call after shutdown settled every attempt (`put_back_unsettled` cancels them). A
        coroutine that ignores its cancellation is left behind with the loop's thread.
        """
        self.lag_watchdog.stop(timeout)
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            time.sleep(0.01)
        idle = not self._running
        if self.on_close is not None and self._thread.is_alive():
            closing = asyncio.run_coroutine_threadsafe(_awaited(self.on_close), self.loop)
            with contextlib.suppress(Exception):
                closing.result(max(0.0, deadline - time.monotonic()))
        elif self.on_close is not None and idle and not self.loop.is_closed():
            # Never started (`pgjobs.testing` runs the loop in its own thread): here.
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(_awaited(self.on_close))
        self.call_soon(self.loop.stop)
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if idle and not self._thread.is_alive():
            self.loop.close()
        return idle

    def subservices(self) -> list[Service]:
        return [self.lag_watchdog]

    def blocking_job(self) -> tuple[ClaimedJob | None, str | None]:
        """The job whose coroutine is running now, and where; (None, None) when none is.

        Called from the watchdog's thread while the loop is blocked, so the loop's
        thread is not mutating what is read here.
        """
        for task, job in list(self._running.items()):
            coroutine: Any = task.get_coro()
            if getattr(coroutine, "cr_running", False):
                return job, self._where(job)
        return None, None

    def _where(self, job: ClaimedJob) -> str | None:
        """The line of the task's function that the loop's thread is running."""
        frame: FrameType | None = sys._current_frames().get(self._thread.ident or -1)
        task = self.pool.tasks.get(job.task)
        code = getattr(task.func, "__code__", None) if task is not None else None
        innermost = frame
        while frame is not None and frame.f_code is not code:
            frame = frame.f_back
        found = frame or innermost
        if found is None:
            return None
        return f"{found.f_code.co_filename}:{found.f_lineno} in {found.f_code.co_name}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _pump(self) -> int:
        """Start waiting async jobs while slots and outcome room last (on the loop)."""
        started = 0
        while self.outcome_room():
            job = self.pool.buffer.take_async()
            if job is None:
                return started
            task = self.loop.create_task(self._execute(job))
            self._running[task] = job
            started += 1
        # The completer is full: look again shortly rather than block the loop.
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_later(_OUTCOME_ROOM_WAIT, self._pump_again)
        return started

    def _pump_again(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _cancel(self, task: asyncio.Task[None]) -> None:
        """Attempt.stop's hook, from any thread: the coroutine sees CancelledError."""
        if not task.done():
            self._cancelled.add(task)
            self.call_soon(task.cancel)

    async def _execute(self, job: ClaimedJob) -> None:
        me = asyncio.current_task()
        assert me is not None
        started = time.monotonic()
        try:
            task, attempt = self.pool.begin(job, cancel=partial(self._cancel, me))
            try:
                if task is None:  # only jobs of registered async tasks come here
                    raise RuntimeError(f"task {job.task!r} is not registered")
                if self.pool.async_middleware:
                    call = partial(call_task, task, job.payload, attempt.context)
                    info = JobInfo.of_claimed(job)
                    value = await run_through_async(self.pool.async_middleware, info, call)
                else:
                    value = await call_task(task, job.payload, attempt.context)
                outcome, raised = self.pool.policy.of_return(job, task, value), None
            except BaseException as error:  # a task's SystemExit is its failure, not ours
                outcome, raised = self.pool.policy.of_exception(job, error), error
            if me in self._cancelled:
                return  # settled by the timeout, cancel or shutdown that cancelled it
            while not self.outcome_room() and not attempt.settled:
                await asyncio.sleep(_OUTCOME_ROOM_WAIT)
            self.pool.end(attempt, outcome, raised)
        finally:
            self.pool.release(job)
            self._running.pop(me, None)
            self._cancelled.discard(me)
            self.pool.buffer.done_async(job, time.monotonic() - started)
            self._pump()


async def _awaited(call: Callable[[], Awaitable[object]]) -> None:
    await call()


class LoopLagWatchdog(LoopService):
    """Logs, once per episode, a coroutine that keeps the event loop from running others.

    Every `threshold / 4` seconds it schedules a callback on the loop; when one has not
    run after `threshold` seconds the loop is blocked, and the job whose coroutine is
    running is named, with the line it is on.
    """

    def __init__(
        self,
        executor: AsyncExecutor,
        threshold: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("loop-watchdog", threshold / 4)
        self.executor = executor
        self.threshold = threshold
        self.clock = clock
        self._sent_at: float | None = None
        self._reported = False

    def run_once(self) -> float:
        """Probe the loop; returns how long the pending probe has waited (0: none did)."""
        now = self.clock()
        sent = self._sent_at
        if sent is None:
            self._sent_at = now
            self.executor.call_soon(partial(self._answered, now))
            return 0.0
        blocked = now - sent
        if blocked >= self.threshold and not self._reported:
            self._reported = True
            job, where = self.executor.blocking_job()
            fields: dict[str, Any] = {"blocked_for": round(blocked, 2), "where": where}
            if job is not None:
                fields.update(job.log_fields())
            log.warning(
                "event loop blocked: an async task is not awaiting; use await, or move "
                "blocking calls to a thread (asyncio.to_thread) or to a def task",
                extra=fields,
            )
        return blocked

    def _answered(self, sent: float) -> None:
        """The probe ran (on the loop): the loop is free again."""
        if self._reported:
            log.info(
                "event loop free again",
                extra={"blocked_for": round(self.clock() - sent, 2)},
            )
        self._reported = False
        self._sent_at = None
