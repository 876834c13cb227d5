"""The executor threads waiting for a job, and how they are woken.

`ClaimBuffer` decides whether a ready job wants one more thread (`Line.more_hands`); this
keeps the waiting threads and wakes them one after the other, each by the one before
once it has its job, rather than one per job at once: a thread woken for a job that a
busy thread took first costs a switch for nothing, and at thousands of short jobs a
second those switches were the worker's biggest cost. Busy threads take the next job
themselves; a burst of slow jobs still fills every thread within a few milliseconds.
Every method is called with the buffer's lock held.
"""

from __future__ import annotations

import threading


class IdleThreads:
    """Executor threads waiting on `lock` (the claim buffer's) for a job."""

    def __init__(self, lock: threading.Lock) -> None:
        self._job_ready = threading.Condition(lock)
        self.count = 0  # threads waiting now
        self._waking = 0  # of those, woken and not yet back: at most one
        self.stalled = 0  # running thread jobs past their stall time (`unstall`)

    def wait(self) -> None:
        """Wait (releasing the lock) until woken."""
        self.count += 1
        self._job_ready.wait()
        self.count -= 1
        self._waking = max(0, self._waking - 1)

    def may_wake(self) -> bool:
        """Whether a thread waits and none is on its way already."""
        return self.count > self._waking == 0

    def wake_one(self) -> None:
        """Wake one waiting thread (after `may_wake`)."""
        self._waking += 1
        self._job_ready.notify()

    def wake_all(self) -> None:
        """Wake every waiting thread (the buffer closed)."""
        self._job_ready.notify_all()
