"""The lines of the claim buffer: held jobs in start order, ready or claimed, and running.

`ClaimBuffer` (claim_buffer.py) keeps one `Line` for the executor threads and one for
`async def` tasks, and decides when to claim, ready and hand back; a line only keeps its
heaps and the sums that sizing a claim needs, so each rule is a few additions. `Turns`
gives the jobs of weighted queues their places in line.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

from pgjobs.types import ClaimedJob
from pgjobs.worker.estimates import Estimates

# Ready jobs (see `Line`) a line keeps beyond its free slots: what its slots started in
# the last this many seconds (about the round trip of the write that readies more), at
# most MAX_READY_AHEAD.
READY_AHEAD = 0.004
MAX_READY_AHEAD = 256


# Ready jobs shorter than HANDOFF (about what waking a thread costs, in CPU and in
# time) are left to the threads running already, while those would start them all
# within PACK_WAIT (`Line.more_hands`).
HANDOFF = 0.00005
PACK_WAIT = 0.002


def start_order(job: ClaimedJob) -> tuple[int, float, int]:
    """The order a worker starts the jobs it holds: `priority DESC, run_at, id`, as claimed."""
    return (-job.priority, job.run_at_epoch, job.id)


class Held(NamedTuple):
    """A heap entry: the sort key, then the job's estimated duration when it was added.

    `turn` is the job's place in its queue's share (0 without weighted queues)."""

    negative_priority: int
    turn: float
    run_at_epoch: float
    id: int
    estimate: float
    job: ClaimedJob


class Line:
    """The jobs of one kind (thread or async) held for a slot, and those running.

    Held jobs wait in two heaps: `claimed` (nothing runs them yet: a rescue returns them
    unrun) and `ready` (readied in the table, `began_at` set: a slot may start them).
    `waiting_work` and `running_work` are the sums of their estimated durations, kept as
    jobs come and go so that sizing a claim costs a few additions.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.claimed: list[Held] = []
        self.ready: list[Held] = []
        self.readying = 0  # taken from `claimed`, being readied in the table
        self.waiting_work = 0.0  # of every held job: claimed, readying and ready
        self.running: dict[int, tuple[str, float]] = {}  # job id -> (task, estimate)
        self.running_work = 0.0
        # Jobs ended in the current span of READY_AHEAD seconds, and in the one before.
        self._ends = self._ends_before = 0
        self._ends_since = -math.inf

    def held(self) -> int:
        return len(self.claimed) + self.readying + len(self.ready)

    def push(self, held: Held, *, ready: bool) -> None:
        heapq.heappush(self.ready if ready else self.claimed, held)
        self.waiting_work += held.estimate

    def pop(self) -> Held:
        held = heapq.heappop(self.ready)
        if self.ready or self.claimed or self.readying:
            self.waiting_work -= held.estimate
        else:
            self.waiting_work = 0.0
        self.running[held.id] = (held.job.task, held.estimate)
        self.running_work += held.estimate
        return held

    def take_claimed(self, count: int) -> list[Held]:
        """The next `count` claimed jobs in line, to be readied."""
        taken = [heapq.heappop(self.claimed) for _ in range(min(count, len(self.claimed)))]
        self.readying += len(taken)
        return taken

    def readied(self, held: Held) -> None:
        self.readying -= 1
        heapq.heappush(self.ready, held)

    def unready(self, held: Held) -> None:
        self.readying -= 1
        heapq.heappush(self.claimed, held)

    def ended(self, job_id: int, now: float) -> None:
        _, estimate = self.running.pop(job_id, ("", 0.0))
        self.running_work = self.running_work - estimate if self.running else 0.0
        if now - self._ends_since >= READY_AHEAD:
            recent = now - self._ends_since < 2 * READY_AHEAD
            self._ends_before = self._ends if recent else 0
            self._ends, self._ends_since = 0, now
        self._ends += 1

    def recent_ends(self, now: float) -> int:
        """Jobs that ended in about the last `READY_AHEAD` seconds."""
        if now - self._ends_since >= 2 * READY_AHEAD:
            return 0
        if now - self._ends_since >= READY_AHEAD:
            return self._ends
        return max(self._ends, self._ends_before)

    def more_hands(self, unmeasured: bool, stalled: int) -> bool:
        """Whether the ready jobs want one more thread than those running them: they
        are not much shorter than waking a thread, their duration is unknown, or the
        running threads (less the `stalled` ones) would not start them all within
        PACK_WAIT.

        Jobs that take next to nothing (no-op jobs: 10-20 µs) go faster on fewer
        threads: ten threads taking turns at them spent two to four times the CPU a job
        that one thread did, waking each other and queueing for the GIL and the
        buffer's lock (bench/PROFILE.md).
        """
        busy = len(self.running) - stalled
        if unmeasured or busy <= 0:
            return True
        head = self.ready[0].estimate
        if head <= 0 or head >= HANDOFF:
            return True
        return head * len(self.ready) > PACK_WAIT * busy

    def free(self) -> int:
        return self.slots - len(self.running)

    def ready_target(self, now: float) -> int:
        """Ready jobs this line should have: one per free slot, and as many as its slots
        started in the last `READY_AHEAD` seconds (about what they start while the write
        that readies more is on its way). Slots busy with long jobs start none: nothing
        is readied for them, and a worker that dies then is charged nothing it held."""
        return self.free() + min(MAX_READY_AHEAD, self.recent_ends(now))

    def short_of_ready(self, clock: Callable[[], float]) -> bool:
        """Claimed jobs wait and fewer than half the ready target are (being) readied
        (the clock is read only then: this runs once per job started)."""
        if not self.claimed:
            return False
        have = len(self.ready) + self.readying
        return have < (self.ready_target(clock()) + 1) // 2

    def spare(self, window: float) -> float:
        """Slot-seconds of the window not yet spoken for; running jobs count half their
        estimate, being on average half done."""
        return window * self.slots - self.running_work / 2 - self.waiting_work

    def remove(self, gone: Callable[[Held], bool]) -> list[ClaimedJob]:
        removed = [h.job for h in (*self.claimed, *self.ready) if gone(h)]
        if removed:
            self._keep(
                [h for h in self.claimed if not gone(h)],
                [h for h in self.ready if not gone(h)],
            )
        return removed

    def clear(self) -> list[ClaimedJob]:
        jobs = [held.job for held in sorted([*self.ready, *self.claimed])]
        self._keep([], [])
        return jobs

    def beyond(self, window: float, estimates: Estimates) -> list[ClaimedJob]:
        """Take out the held jobs expected to start later than `window` from now, with
        fresh estimates; the jobs for the free slots always stay."""
        self.running = {
            job_id: (task, estimates.of(task)) for job_id, (task, _) in self.running.items()
        }
        self.running_work = sum(estimate for _, estimate in self.running.values())
        ahead = self.running_work / 2
        ready_ids = {held.id for held in self.ready}
        kept: tuple[list[Held], list[Held]] = ([], [])
        released: list[ClaimedJob] = []
        for index, held in enumerate(sorted([*self.ready, *self.claimed])):
            if index >= self.free() - self.readying and ahead > window * self.slots:
                released.append(held.job)
                continue
            estimate = estimates.of(held.job.task)
            kept[held.id in ready_ids].append(held._replace(estimate=estimate))
            ahead += estimate
        self._keep(*kept)
        return released

    def _keep(self, claimed: list[Held], ready: list[Held]) -> None:
        heapq.heapify(claimed)
        heapq.heapify(ready)
        self.claimed, self.ready = claimed, ready
        self.waiting_work = sum(h.estimate for h in (*claimed, *ready))


class Turns:
    """Places in line for the jobs of weighted queues (stride scheduling).

    Each queue's next job comes `1 / weight` after its last one, and never before the
    turn of the job started last: a queue that was empty for a while joins the line
    where it stands now instead of jumping ahead of everyone with its old turns.
    """

    def __init__(self) -> None:
        self.now = 0.0  # the turn of the job started last
        self.last: dict[str, float] = {}

    def of(self, jobs: Collection[ClaimedJob], weights: Mapping[str, int] | None) -> list[float]:
        if weights is None:
            return [0.0] * len(jobs)
        turns: dict[int, float] = {}
        for job in sorted(jobs, key=start_order):
            turn = max(self.now, self.last.get(job.queue, 0.0)) + 1 / weights.get(job.queue, 1)
            self.last[job.queue] = turns[job.id] = turn
        return [turns[job.id] for job in jobs]

    def reached(self, turn: float) -> None:
        self.now = max(self.now, turn)
