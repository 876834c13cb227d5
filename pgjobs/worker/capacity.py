"""The claim buffer: claimed jobs waiting for a thread, in the order they must start.

The fetcher asks `room()` before claiming and puts what it claimed here; executor threads
`take()` from here, and the event loop of `async def` tasks `take_async()`s the jobs of
those tasks (`is_async`), which wait in a line of their own. Outcomes waiting to be
written are bounded separately, by the completer.

Claiming ahead keeps the threads busy, and must not bend what pgjobs promises:
- **Order.** Each line is a heap on `(priority DESC, run_at, id)`, so whatever several
  claims brought in, the most urgent held job starts first. With weighted queues, jobs
  of one priority from different queues start in the weights' proportions (a queue's
  next job goes after `1 / weight` of virtual time, as in stride scheduling); within a
  queue, by `run_at, id`.
- **A job that never ran is never charged.** A thread starts only a *ready* job: one the
  table marks as such (`began_at`). The claim readies the jobs for the free slots; the
  others wait *claimed*, and the fetcher readies the next few in line just before the
  slots need them (`to_ready`: one per free slot, and as many as the slots started in
  the last `READY_AHEAD` seconds). A rescue gives the attempt of a claimed job back,
  uncharged; so a worker that dies costs its claimed jobs nothing, and at most those
  few ready ones an attempt each (none while its slots run long jobs).
- **No hoarding.** What may wait here is bounded in count (`prefetch`, an upper bound)
  and in time: no more than the threads are expected to start within `window` seconds,
  from the task durations this worker measured (`Estimates`). Before anything was
  measured nothing is claimed beyond the free threads; slow tasks keep the buffer empty.
  When an estimate rises (a task turned out slow, or runs past the window right now),
  `surplus()` hands back the jobs that would now wait longer than the window, for the
  fetcher to return to the queue where idle workers can take them.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

from pgjobs.worker.estimates import Estimates
from pgjobs.worker.jobs import ClaimedJob, start_order

# The default of `window`: claim ahead what the threads should start within this many
# seconds. The SPEC caps it at one second; a quarter keeps a backlog of millisecond jobs
# claimed hundreds at a time (README, "Claim-ahead").
DEFAULT_WINDOW = 0.25
# Ready jobs (see `_Line`) a line keeps beyond its free slots: what its slots started in
# the last this many seconds (about the round trip of the write that readies more), at
# most MAX_READY_AHEAD.
READY_AHEAD = 0.004
MAX_READY_AHEAD = 256


class _Held(NamedTuple):
    """A heap entry: the sort key, then the job's estimated duration when it was added.

    `turn` is the job's place in its queue's share (0 without weighted queues)."""

    negative_priority: int
    turn: float
    run_at_epoch: float
    id: int
    estimate: float
    job: ClaimedJob


class _Line:
    """The jobs of one kind (thread or async) held for a slot, and those running.

    Held jobs wait in two heaps: `claimed` (nothing runs them yet: a rescue returns them
    unrun) and `ready` (readied in the table, `began_at` set: a slot may start them).
    `waiting_work` and `running_work` are the sums of their estimated durations, kept as
    jobs come and go so that sizing a claim costs a few additions.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.claimed: list[_Held] = []
        self.ready: list[_Held] = []
        self.readying = 0  # taken from `claimed`, being readied in the table
        self.waiting_work = 0.0  # of every held job: claimed, readying and ready
        self.running: dict[int, tuple[str, float]] = {}  # job id -> (task, estimate)
        self.running_work = 0.0
        # Jobs ended in the current span of READY_AHEAD seconds, and in the one before.
        self._ends = self._ends_before = 0
        self._ends_since = -math.inf

    def held(self) -> int:
        return len(self.claimed) + self.readying + len(self.ready)

    def push(self, held: _Held, *, ready: bool) -> None:
        heapq.heappush(self.ready if ready else self.claimed, held)
        self.waiting_work += held.estimate

    def pop(self) -> _Held:
        held = heapq.heappop(self.ready)
        if self.ready or self.claimed or self.readying:
            self.waiting_work -= held.estimate
        else:
            self.waiting_work = 0.0
        self.running[held.id] = (held.job.task, held.estimate)
        self.running_work += held.estimate
        return held

    def take_claimed(self, count: int) -> list[_Held]:
        """The next `count` claimed jobs in line, to be readied."""
        taken = [heapq.heappop(self.claimed) for _ in range(min(count, len(self.claimed)))]
        self.readying += len(taken)
        return taken

    def readied(self, held: _Held) -> None:
        self.readying -= 1
        heapq.heappush(self.ready, held)

    def unready(self, held: _Held) -> None:
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

    def free(self) -> int:
        return self.slots - len(self.running)

    def spare(self, window: float) -> float:
        """Slot-seconds of the window not yet spoken for; running jobs count half their
        estimate, being on average half done."""
        return window * self.slots - self.running_work / 2 - self.waiting_work

    def remove(self, gone: Callable[[_Held], bool]) -> list[ClaimedJob]:
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
        kept: tuple[list[_Held], list[_Held]] = ([], [])
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

    def _keep(self, claimed: list[_Held], ready: list[_Held]) -> None:
        heapq.heapify(claimed)
        heapq.heapify(ready)
        self.claimed, self.ready = claimed, ready
        self.waiting_work = sum(h.estimate for h in (*claimed, *ready))


class _Turns:
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


class Capacity:
    """The claim buffer plus the count of jobs being run, for thread and async jobs.

    Thread jobs and async jobs have their own line and their own slots, under one claim
    bound: a job claimed ahead waits for a slot of its kind.
    """

    def __init__(
        self,
        concurrency: int,
        prefetch: int,
        *,
        async_slots: int = 0,
        is_async: Callable[[ClaimedJob], bool] = lambda job: False,
        window: float = DEFAULT_WINDOW,
        estimates: Estimates | None = None,
        weights: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.clock = clock
        self.async_slots = async_slots
        self.is_async = is_async
        self.prefetch = prefetch  # jobs held beyond the free slots, at most
        self.window = window
        self.estimates = estimates or Estimates()
        self._threads = _Line(concurrency)
        self._async = _Line(async_slots)
        self._readying: list[tuple[_Line, _Held]] = []
        self._weights = weights
        self._turns = _Turns()
        self._ahead = 0  # jobs the last sizing allowed beyond the free slots
        self._recheck = False  # an estimate rose: some held job may now wait too long
        self._closed = False
        self._idle_threads = 0  # executor threads waiting for a job
        self._waking = 0  # of those, woken and not yet back (at most one, see _wake_one)
        self._lock = threading.Lock()
        self._job_ready = threading.Condition(self._lock)
        self._on_room: Callable[[], None] = lambda: None
        self._on_ready_wanted: Callable[[], None] = lambda: None
        self._on_async_jobs: Callable[[], None] = lambda: None

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call `callback` (the fetcher's wake-up) when there is room to claim, or held
        jobs that may have to be handed back (`surplus`)."""
        self._on_room = callback

    def on_ready_wanted(self, callback: Callable[[], None]) -> None:
        """Call `callback` (the readier's wake-up) when the ready jobs run low."""
        self._on_ready_wanted = callback

    def on_async_jobs(self, callback: Callable[[], None]) -> None:
        """Call `callback` (the event loop's wake-up) when async jobs became ready."""
        self._on_async_jobs = callback

    @property
    def _lines(self) -> tuple[_Line, ...]:
        return (self._threads, self._async) if self.async_slots else (self._threads,)

    # --- the fetcher's side: claiming -------------------------------------------------

    def room(self) -> int:
        """How many more jobs may be claimed now."""
        with self._lock:
            self._ahead = self._size_ahead()
            return self._room()

    def wants_jobs(self) -> bool:
        """Worth a claim: a batch's worth of room, or a slot with nothing to start."""
        with self._lock:
            self._ahead = self._size_ahead()
            return self._wants_jobs()

    def _size_ahead(self) -> int:
        """Jobs that may wait beyond the free slots: at most `prefetch`, and no more than
        the slots are expected to start within the window (none before a measurement)."""
        mean = self.estimates.mean
        if mean is None or self.prefetch == 0:
            return 0
        spare = sum(line.spare(self.window) for line in self._lines)
        if spare <= 0:
            return 0
        if mean <= 0:
            return self.prefetch
        return min(self.prefetch, int(spare / mean))

    # `_room` and `_wants_jobs` run once per finished job: plain arithmetic, no loops.
    def _room(self) -> int:
        if self._closed:
            return 0
        t = self._threads
        room = t.slots - len(t.running) - len(t.claimed) - t.readying - len(t.ready)
        if self.async_slots:
            a = self._async
            room += a.slots - len(a.running) - len(a.claimed) - a.readying - len(a.ready)
        room += self._ahead
        return room if room > 0 else 0

    def _wants_jobs(self) -> bool:
        room = self._room()
        if room >= max(1, (self.concurrency + self.async_slots + self._ahead) // 4):
            return True
        return room > 0 and any(not line.held() and line.free() > 0 for line in self._lines)

    def ready_at_claim(self) -> int:
        """How many of the next claim's jobs to ready at once: those for the slots that
        are short of ready jobs, unless claimed jobs already wait in line before them."""
        with self._lock:
            if any(line.claimed or line.readying for line in self._lines):
                return 0
            return sum(max(0, self._ready_target(line) - len(line.ready)) for line in self._lines)

    def add(self, jobs: Collection[ClaimedJob], ready: Collection[int] = ()) -> None:
        """Jobs the fetcher claimed (at most `room()` of them); `ready`: the ids the
        claim readied for the threads."""
        async_ready = False
        with self._lock:
            of = self.estimates.of
            turns = self._turns.of(jobs, self._weights)
            for job, turn in zip(jobs, turns, strict=True):
                line = self._async if self.async_slots and self.is_async(job) else self._threads
                held = _Held(-job.priority, turn, job.run_at_epoch, job.id, of(job.task), job)
                readied = job.id in ready
                line.push(held, ready=readied)
                async_ready = async_ready or (readied and line is self._async)
            self._wake_one()
            # Idle threads asked for ready jobs before these were claimed: ask again.
            wants_ready = any(self._short_of_ready(line) for line in self._lines)
        if async_ready:
            self._on_async_jobs()
        if wants_ready:
            self._on_ready_wanted()

    # --- the fetcher's side: readying --------------------------------------------------

    def _ready_target(self, line: _Line) -> int:
        """Ready jobs a line should have: one per free slot, and as many as its slots
        started in the last `READY_AHEAD` seconds (about what they start while the write
        that readies more is on its way). Slots busy with long jobs start none: nothing
        is readied for them, and a worker that dies then is charged nothing it held."""
        return line.free() + min(MAX_READY_AHEAD, line.recent_ends(self.clock()))

    def _short_of_ready(self, line: _Line) -> bool:
        if not line.claimed:
            return False
        have = len(line.ready) + line.readying
        return have < (self._ready_target(line) + 1) // 2

    def wants_ready(self) -> bool:
        """Claimed jobs should be readied: the ready ones run low."""
        with self._lock:
            return not self._closed and any(self._short_of_ready(line) for line in self._lines)

    def to_ready(self) -> list[ClaimedJob]:
        """The next claimed jobs in line to ready for the slots (then `readied`)."""
        with self._lock:
            if self._closed:
                return []
            for line in self._lines:
                if self._short_of_ready(line):
                    want = self._ready_target(line) - len(line.ready) - line.readying
                    self._readying += [(line, held) for held in line.take_claimed(want)]
            return [held.job for _, held in self._readying]

    def readied(self) -> None:
        """The jobs of `to_ready` are ready in the table. (Those taken away meanwhile,
        cancelled or rescued, were dropped from the readying ones by `discard`.)"""
        with self._lock:
            async_ready = any(line is self._async for line, _ in self._readying)
            for line, held in self._readying:
                line.readied(held)
            self._readying = []
            self._wake_one()
        if async_ready:
            self._on_async_jobs()

    def unready(self) -> None:
        """Readying the jobs of `to_ready` failed: back in line, claimed."""
        with self._lock:
            for line, held in self._readying:
                line.unready(held)
            self._readying = []

    def surplus(self) -> list[ClaimedJob]:
        """Take out the claimed jobs that would wait longer than the window, for the
        fetcher to give back to the queue; usually none, at the cost of a comparison."""
        with self._lock:
            lines = self._lines
            if self._closed or not (
                self._recheck or any(line.spare(self.window) < 0 for line in lines)
            ):
                return []
            self._recheck = False
            released: list[ClaimedJob] = []
            for line in lines:
                released.extend(line.beyond(self.window, self.estimates))
            self._ahead = self._size_ahead()
            return released

    # --- the executors' side -----------------------------------------------------------

    def take(self) -> ClaimedJob | None:
        """The next ready job to run (blocks); None once the buffer is closed."""
        with self._lock:
            while not self._threads.ready:
                if self._closed:
                    return None
                if self._short_of_ready(self._threads):
                    self._on_ready_wanted()
                self._idle_threads += 1
                self._job_ready.wait()
                self._idle_threads -= 1
                self._waking = max(0, self._waking - 1)
            held = self._threads.pop()
            if self._weights is not None:
                self._turns.reached(held.turn)
            self._wake_one()
            wants_ready = self._short_of_ready(self._threads)
        if wants_ready:
            self._on_ready_wanted()
        return held.job

    def take_async(self) -> ClaimedJob | None:
        """The next ready async job, if one waits and an async slot is free (never
        blocks)."""
        with self._lock:
            if not self._async.ready or self._async.free() <= 0:
                wants_ready = self._short_of_ready(self._async)
                held = None
            else:
                held = self._async.pop()
                self._turns.reached(held.turn)
                wants_ready = self._short_of_ready(self._async)
        if wants_ready:
            self._on_ready_wanted()
        return None if held is None else held.job

    def _wake_one(self) -> None:
        """Wake an idle thread for the ready jobs, unless one is on its way already.

        Threads are woken one after the other, each by the one before once it has its
        job, rather than one per job at once: a thread woken for a job that a busy
        thread took first costs a switch for nothing, and at thousands of short jobs a
        second those switches were the worker's biggest cost. Busy threads take the next
        job themselves; a burst of slow jobs still fills every thread within a few
        milliseconds. The caller holds the lock.
        """
        if self._threads.ready and self._idle_threads > self._waking == 0:
            self._waking += 1
            self._job_ready.notify()

    def done(self, job: ClaimedJob, duration: float) -> None:
        """A thread finished `job` after `duration` seconds and handed its outcome on."""
        self._ended(self._threads, job, duration)

    def done_async(self, job: ClaimedJob, duration: float) -> None:
        """An async job finished and its outcome was handed to the completer."""
        self._ended(self._async, job, duration)

    def _ended(self, line: _Line, job: ClaimedJob, duration: float) -> None:
        with self._lock:
            line.ended(job.id, self.clock())
            rose = self.estimates.observe(job.task, duration) and self._may_overflow(job.task)
            if rose:
                self._recheck = True
            wants = rose or self._wants_jobs()
        if wants:
            self._on_room()

    def _may_overflow(self, task: str) -> bool:
        """Whether jobs of `task` could fill the window, were every held job one: if
        not, a rise of its estimate is no reason to look at what is held."""
        slots = self.concurrency + self.async_slots
        return self.estimates.of(task) * (self.prefetch + slots) > self.window * slots

    def running_for(self, task: str, seconds: float) -> None:
        """An attempt of `task` has been running `seconds` (the watchdog's report)."""
        with self._lock:
            rose = self.estimates.running_for(task, seconds) and self._may_overflow(task)
            self._recheck = self._recheck or rose
        if rose:
            self._on_room()

    # --- what the worker holds -----------------------------------------------------------

    def waiting_ids(self) -> list[int]:
        """Claimed jobs not started yet (the heartbeat keeps them too)."""
        return [job.id for job in self.waiting_jobs()]

    def waiting_jobs(self) -> list[ClaimedJob]:
        """Claimed jobs not started yet."""
        with self._lock:
            held = [h for line in self._lines for h in (*line.claimed, *line.ready)]
            return [h.job for h in held] + [h.job for _, h in self._readying]

    def ready_ids(self) -> list[int]:
        """Jobs readied for the slots, being readied, or running."""
        with self._lock:
            ready = [h.id for line in self._lines for h in line.ready]
            running = [job_id for line in self._lines for job_id in line.running]
            return ready + running + [h.id for _, h in self._readying]

    def running(self) -> int:
        """Jobs being run now on the executor threads."""
        with self._lock:
            return len(self._threads.running)

    def running_async(self) -> int:
        """Jobs being run now on the event loop of `async def` tasks."""
        with self._lock:
            return len(self._async.running)

    def idle_threads(self) -> int:
        """Executor threads waiting for a job now."""
        with self._lock:
            return self._idle_threads

    def waiting(self) -> int:
        """Claimed jobs not started yet, for the executor threads."""
        with self._lock:
            return self._threads.held()

    def ready(self) -> int:
        """Jobs ready for the executor threads to start."""
        with self._lock:
            return len(self._threads.ready)

    def discard(
        self, job_ids: Collection[int] | Mapping[int, object], *, same_claim: bool = False
    ) -> list[ClaimedJob]:
        """Remove held jobs that are no longer ours (cancelled, rescued); returns them.
        With `same_claim`, `job_ids` maps each id to the claimed job that is lost, and a
        later claim of the same job stays."""
        claims = job_ids if isinstance(job_ids, Mapping) else {}

        def gone(held: _Held) -> bool:
            if held.id not in job_ids:
                return False
            return not same_claim or claims.get(held.id) is held.job

        with self._lock:
            for line, held in self._readying:
                if gone(held):
                    line.readying -= 1
                    line.waiting_work -= held.estimate
            self._readying = [(line, held) for line, held in self._readying if not gone(held)]
            return [job for line in self._lines for job in line.remove(gone)]

    def close(self) -> list[ClaimedJob]:
        """Accept no more jobs and return the held ones not started; idle threads get
        None."""
        with self._lock:
            self._closed = True
            for line, held in self._readying:
                line.unready(held)
            self._readying = []
            unstarted = [job for line in self._lines for job in line.clear()]
            self._job_ready.notify_all()
            return unstarted
