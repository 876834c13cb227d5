"""The hand-over between the fetcher and the executor threads, and the claim bound.

A worker holds at most `concurrency + async_slots + prefetch` claimed jobs that have no
outcome yet: the ones running and the ones waiting here to start (`prefetch` may adapt
between a minimum and a maximum, see `adapt`). The fetcher asks `room()` before
claiming and puts what it claimed here; executor threads `take()` from here, and the
event loop of `async def` tasks `take_async()`s the jobs of those tasks (`is_async`),
which wait in a line of their own. Outcomes waiting to be written are bounded
separately, by the completer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection

from pgjobs.worker.jobs import ClaimedJob


class Capacity:
    """A bounded buffer of claimed jobs plus the count of jobs being run.

    Thread jobs and async jobs have their own line and their own count of slots, under
    one claim bound: a job claimed ahead waits for a slot of its kind.
    """

    def __init__(
        self,
        concurrency: int,
        prefetch: int,
        *,
        async_slots: int = 0,
        is_async: Callable[[ClaimedJob], bool] = lambda job: False,
        max_prefetch: int | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.async_slots = async_slots
        self.is_async = is_async
        self.min_prefetch = prefetch
        self.max_prefetch = max(prefetch, max_prefetch or 0)
        self._starved = False  # a thread waited for a job since the last claim
        self._waiting: deque[ClaimedJob] = deque()
        self._running = 0
        self._async_waiting: deque[ClaimedJob] = deque()
        self._async_running = 0
        self._on_async_jobs: Callable[[], None] = lambda: None
        self._closed = False
        self._idle_threads = 0  # executor threads waiting for a job
        self._waking = 0  # of those, woken and not yet back (at most one, see _wake_one)
        self._lock = threading.Lock()
        self._job_ready = threading.Condition(self._lock)
        self._on_room: Callable[[], None] = lambda: None
        self._set_prefetch(prefetch)

    def _set_prefetch(self, prefetch: int) -> None:
        self.prefetch = prefetch
        self.limit = self.concurrency + self.async_slots + prefetch
        # Claim again once this much room opened up, so that claims are batches rather
        # than one round trip per finished job; with no prefetch, as soon as a thread is
        # free.
        self.refill_at = max(1, self.limit // 4) if prefetch else 1

    def adapt(self, *, full: bool) -> None:
        """Size the claim-ahead after a claim; `full`: it got all the room it asked for.

        Between `min_prefetch` and `max_prefetch`: doubled when a claim came back full
        (more jobs wait) and yet a thread sat idle for want of a job since the last one,
        or still does (the jobs are shorter than a claim's round trip); back to the
        minimum once a claim finds fewer jobs than it could take. Long jobs never leave a
        thread idle while more wait, so they are never claimed far ahead of their threads.
        """
        with self._lock:
            if not full:
                self._set_prefetch(self.min_prefetch)
            elif (self._starved or self._idle_threads) and self.prefetch < self.max_prefetch:
                self._set_prefetch(min(self.max_prefetch, max(1, self.prefetch) * 2))
            self._starved = False

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call `callback` (the fetcher's wake-up) when enough room opened to claim."""
        self._on_room = callback

    def room(self) -> int:
        """How many more jobs may be claimed now."""
        with self._lock:
            return self._room()

    def wants_jobs(self) -> bool:
        """Worth a claim: a batch's worth of room, or a thread with nothing to start."""
        with self._lock:
            return self._wants_jobs()

    def _room(self) -> int:
        if self._closed:
            return 0
        held = len(self._waiting) + self._running + len(self._async_waiting) + self._async_running
        return self.limit - held

    def _wants_jobs(self) -> bool:
        room = self._room()
        idle_thread = not self._waiting and self._running < self.concurrency
        idle_slot = not self._async_waiting and self._async_running < self.async_slots
        return room >= self.refill_at or (room > 0 and (idle_thread or idle_slot))

    def add(self, jobs: Collection[ClaimedJob]) -> None:
        """Jobs the fetcher claimed (at most `room()` of them)."""
        if self.async_slots:
            kinds: tuple[list[ClaimedJob], list[ClaimedJob]] = ([], [])
            for job in jobs:
                kinds[self.is_async(job)].append(job)
            jobs, async_jobs = kinds
            if async_jobs:
                with self._lock:
                    self._async_waiting.extend(async_jobs)
                self._on_async_jobs()
        with self._lock:
            self._waiting.extend(jobs)
            self._wake_one()

    def on_async_jobs(self, callback: Callable[[], None]) -> None:
        """Call `callback` (the event loop's wake-up) when async jobs were added."""
        self._on_async_jobs = callback

    def take_async(self) -> ClaimedJob | None:
        """The next async job, if one waits and an async slot is free (never blocks)."""
        with self._lock:
            if not self._async_waiting or self._async_running >= self.async_slots:
                return None
            self._async_running += 1
            return self._async_waiting.popleft()

    def done_async(self) -> None:
        """An async job finished and its outcome was handed to the completer."""
        with self._lock:
            self._async_running -= 1
            wants = self._wants_jobs()
        if wants:
            self._on_room()

    def take(self) -> ClaimedJob | None:
        """The next job to run (blocks); None once the buffer is closed."""
        with self._lock:
            while not self._waiting:
                if self._closed:
                    return None
                self._idle_threads += 1
                self._starved = True
                self._job_ready.wait()
                self._idle_threads -= 1
                self._waking = max(0, self._waking - 1)
            self._running += 1
            job = self._waiting.popleft()
            self._wake_one()
            return job

    def _wake_one(self) -> None:
        """Wake an idle thread for the jobs waiting, unless one is on its way already.

        Threads are woken one after the other, each by the one before once it has its
        job, rather than one per job at once: a thread woken for a job that a busy
        thread took first costs a switch for nothing, and at thousands of short jobs a
        second those switches were the worker's biggest cost. Busy threads take the next
        job themselves; a burst of slow jobs still fills every thread within a few
        milliseconds. The caller holds the lock.
        """
        if self._waiting and self._idle_threads > self._waking == 0:
            self._waking += 1
            self._job_ready.notify()

    def done(self) -> None:
        """A thread finished its job and handed the outcome to the completer."""
        with self._lock:
            self._running -= 1
            wants = self._wants_jobs()
        if wants:
            self._on_room()

    def waiting_ids(self) -> list[int]:
        """Claimed jobs not started yet (the heartbeat keeps them too)."""
        with self._lock:
            return [job.id for job in (*self._waiting, *self._async_waiting)]

    def running(self) -> int:
        """Jobs being run now on the executor threads."""
        with self._lock:
            return self._running

    def running_async(self) -> int:
        """Jobs being run now on the event loop of `async def` tasks."""
        with self._lock:
            return self._async_running

    def idle_threads(self) -> int:
        """Executor threads waiting for a job now."""
        with self._lock:
            return self._idle_threads

    def waiting(self) -> int:
        """Claimed jobs not started yet, for the executor threads."""
        with self._lock:
            return len(self._waiting)

    def discard(self, job_ids: Collection[int]) -> list[ClaimedJob]:
        """Remove waiting jobs that are no longer ours (cancelled, rescued); returns them."""
        with self._lock:
            gone = [job for job in (*self._waiting, *self._async_waiting) if job.id in job_ids]
            if gone:
                self._waiting = deque(job for job in self._waiting if job.id not in job_ids)
                self._async_waiting = deque(
                    job for job in self._async_waiting if job.id not in job_ids
                )
            return gone

    def close(self) -> list[ClaimedJob]:
        """Accept no more jobs and return the waiting ones; idle threads get None."""
        with self._lock:
            self._closed = True
            unstarted = [*self._waiting, *self._async_waiting]
            self._waiting.clear()
            self._async_waiting.clear()
            self._job_ready.notify_all()
            return unstarted
