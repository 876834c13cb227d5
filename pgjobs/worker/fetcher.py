"""The fetcher: claims jobs in batches, ahead of the executor threads.

It claims when there is room (`ClaimBuffer.wants_jobs`) and something suggests there is
work: a NOTIFY, a claim that came back full, a retry that falls due, or the slow poll
that finds delayed jobs whose time has come and covers missed notifications. One
statement claims up to all the room there is, so with a prefetch buffer a busy worker
makes one claim per batch of jobs instead of one per job, and the threads find the
next job waiting for them. A NOTIFY storm costs nothing while there is no room.

It also hands back to the queue the held jobs that the buffer finds surplus
(`ClaimBuffer.surplus`: they would wait longer than its window), so that idle workers can
run them; they keep their place in line and the attempt is given back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pgjobs.data.claims import ClaimStatements
from pgjobs.types import ClaimedJob
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.connection import Connections
from pgjobs.worker.limits import LimitsWatch
from pgjobs.worker.queues import QueueSpec, allocate
from pgjobs.worker.service import LoopService, StopPhase


@dataclass(frozen=True)
class Claims:
    """How this worker claims: from which queues (shared by weight, drawn with `random`),
    as which worker, and whether a claim waits for the disk (`async_commit`: no).

    The fetcher decides when; `pgjobs.testing` claims through this too.
    """

    connection: Connections
    statements: ClaimStatements
    queues: QueueSpec
    worker_id: str
    random: Callable[[], float]
    async_commit: bool = False
    limits: LimitsWatch | None = None

    def claim(self, limit: int, *, begin: int = 0) -> tuple[list[ClaimedJob], set[int]]:
        """Claim up to `limit` jobs, sharing them between weighted queues, and ready the
        first `begin` of them for the threads; the jobs, and the ids readied."""
        if limit <= 0:
            return [], set()
        if self.queues.weights is None:
            return self._claim(limit, None, begin)
        claimed: list[ClaimedJob] = []
        ready: set[int] = set()
        shortfall = 0
        for queue, share in allocate(self.queues.weights, limit, self.random):
            want = share + shortfall
            if want == 0:
                continue
            got, readied = self._claim(want, queue, min(begin, want))
            begin -= len(readied)
            claimed.extend(got)
            ready |= readied
            shortfall = want - len(got)
        return claimed, ready

    def read_limits(self) -> bool:
        """Read again whether any limit exists, when due (after a claim: see
        `LimitsWatch.read`); True when limits just appeared, so their jobs are claimable."""
        limits = self.limits
        if limits is None or not limits.read_due():
            return False
        appeared: bool = self.connection.run(limits.read, attempts=2)
        return appeared

    def _claim(
        self, limit: int, queue: str | None, begin: int
    ) -> tuple[list[ClaimedJob], set[int]]:
        # One quick retry covers a connection that went stale while idle. Retrying a claim
        # is safe: if the first one committed unseen, its jobs are never heart-beaten and
        # the rescuer returns them.
        claimed: tuple[list[ClaimedJob], set[int]] = self.connection.run(
            lambda conn: self._claim_on(conn, limit, queue, begin), attempts=2
        )
        return claimed

    def _claim_on(
        self, conn: Any, limit: int, queue: str | None, begin: int
    ) -> tuple[list[ClaimedJob], set[int]]:
        """The limited jobs within their limits first (when any limit exists), then the
        others with the room left."""
        limits = self.limits
        jobs: list[ClaimedJob] = []
        ready: set[int] = set()
        if limits is not None and limits.active(conn) and limits.due:
            jobs, ready = limits.statements.claim(
                conn, limit=limit, queue=queue, worker_id=self.worker_id, begin=begin
            )
            limits.claimed([job.id for job in jobs], found=bool(jobs))
        if len(jobs) < limit:
            more, more_ready = self.statements.claim(
                conn,
                limit=limit - len(jobs),
                queue=queue,
                worker_id=self.worker_id,
                begin=max(begin - len(ready), 0),
                async_commit=self.async_commit,
            )
            jobs += more
            ready |= more_ready
        return jobs, ready


class Fetcher(LoopService):
    """Claims jobs into `buffer` through `claims`; woken by the buffer when room opens up,
    by the listener on a NOTIFY."""

    stop_phase = StopPhase.INTAKE
    stop_timeout = 5.0  # a claim on its way is let finish, so its jobs are put back

    def __init__(
        self,
        claims: Claims,
        buffer: ClaimBuffer,
        *,
        poll_interval: float,
        give_back: Callable[[Sequence[ClaimedJob]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("fetcher", poll_interval)
        self.claims = claims
        self.buffer = buffer
        self.give_back = give_back
        self.clock = clock
        self._next_poll = clock()
        self._maybe_more = True  # the last claim came back full, or nothing claimed yet
        self._job_available = False  # a NOTIFY arrived since the last claim
        self._lock = threading.Lock()

    def notify_job_available(self) -> None:
        """Called by the listener for a NOTIFY on a wanted queue."""
        with self._lock:
            self._job_available = True
        if self.claims.limits is not None:
            self.claims.limits.wake()
        self.wake()

    def poll_soon(self, delay: float) -> None:
        """Poll within `delay` seconds: a job was retried sooner than the next poll."""
        with self._lock:
            self._next_poll = min(self._next_poll, self.clock() + delay)
        self.wake()

    def poll_every(self, interval: float) -> None:
        """Change the poll interval (shorter while notifications do not arrive)."""
        with self._lock:
            self.interval = interval
            self._next_poll = min(self._next_poll, self.clock() + interval)
        self.wake()

    def run_once(self) -> int:
        """Claim if there is room and reason to, and hand back what the buffer finds
        surplus; returns how many jobs were claimed."""
        self.release_surplus()
        claimed = self._claim_if_wanted()
        if self.claims.read_limits():
            self._maybe_more = True  # claim their jobs at once
        self.release_surplus()
        return claimed

    def _claim_if_wanted(self) -> int:
        if not self.buffer.wants_jobs():
            return 0
        now = self.clock()
        with self._lock:
            poll_due = now >= self._next_poll
            if not (poll_due or self._maybe_more or self._job_available):
                return 0
            if poll_due:
                self._next_poll = now + self.interval
            self._job_available = False
        room = self.buffer.room()
        self._maybe_more = True  # until a claim says otherwise, also if this one fails
        jobs, ready = self.claims.claim(room, begin=self.buffer.ready_at_claim())
        self.buffer.add(jobs, ready)
        self._maybe_more = len(jobs) == room
        return len(jobs)

    def release_surplus(self) -> list[ClaimedJob]:
        """Hand back the held jobs that would wait longer than the buffer's window."""
        surplus = self.buffer.surplus()
        if surplus:
            self.give_back(surplus)
        return surplus

    def next_wait(self) -> float:
        if self.buffer.wants_jobs() and (self._maybe_more or self._job_available):
            return 0.0
        with self._lock:
            return min(max(self._next_poll - self.clock(), 0.0), self.interval)
