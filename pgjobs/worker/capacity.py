"""The hand-over between the fetcher and the executor threads, and the claim bound.

A worker holds at most `concurrency + prefetch` claimed jobs that have no outcome yet:
the ones running and the ones waiting here to start. The fetcher asks `room()` before
claiming and puts what it claimed here; executor threads `take()` from here. Outcomes
waiting to be written are bounded separately, by the completer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection

from pgjobs.worker.jobs import ClaimedJob


class Capacity:
    """A bounded buffer of claimed jobs plus the count of jobs being run."""

    def __init__(self, concurrency: int, prefetch: int) -> None:
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.limit = concurrency + prefetch
        self._waiting: deque[ClaimedJob] = deque()
        self._running = 0
        self._closed = False
        self._lock = threading.Lock()
        self._job_ready = threading.Condition(self._lock)
        self._on_room: Callable[[], None] = lambda: None
        # Claim again once this much room opened up, so that claims are batches rather
        # than one round trip per finished job; with no prefetch, as soon as a thread is
        # free.
        self.refill_at = max(1, self.limit // 4) if prefetch else 1

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
        return 0 if self._closed else self.limit - len(self._waiting) - self._running

    def _wants_jobs(self) -> bool:
        room = self._room()
        idle_thread = not self._waiting and self._running < self.concurrency
        return room >= self.refill_at or (room > 0 and idle_thread)

    def add(self, jobs: Collection[ClaimedJob]) -> None:
        """Jobs the fetcher claimed (at most `room()` of them)."""
        with self._lock:
            self._waiting.extend(jobs)
            self._job_ready.notify(len(jobs))

    def take(self) -> ClaimedJob | None:
        """The next job to run (blocks); None once the buffer is closed."""
        with self._lock:
            while not self._waiting:
                if self._closed:
                    return None
                self._job_ready.wait()
            self._running += 1
            return self._waiting.popleft()

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
            return [job.id for job in self._waiting]

    def running(self) -> int:
        """Jobs being run now."""
        with self._lock:
            return self._running

    def waiting(self) -> int:
        """Claimed jobs not started yet."""
        with self._lock:
            return len(self._waiting)

    def discard(self, job_ids: Collection[int]) -> list[ClaimedJob]:
        """Remove waiting jobs that are no longer ours (cancelled, rescued); returns them."""
        with self._lock:
            gone = [job for job in self._waiting if job.id in job_ids]
            if gone:
                self._waiting = deque(job for job in self._waiting if job.id not in job_ids)
            return gone

    def close(self) -> list[ClaimedJob]:
        """Accept no more jobs and return the waiting ones; idle threads get None."""
        with self._lock:
            self._closed = True
            unstarted = list(self._waiting)
            self._waiting.clear()
            self._job_ready.notify_all()
            return unstarted
