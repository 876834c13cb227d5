"""The claim buffer: claimed jobs waiting for a thread, in the order they must start.

The fetcher puts what it claimed here (within `room()`); executor threads `take()` the
jobs, the event loop of `async def` tasks `take_async()`s theirs (`is_async`: a line of
their own). Outcomes waiting to be written are bounded by the completer.

Claiming ahead keeps the threads busy, and must not bend what pgjobs promises (in full:
docs/architecture.md, "Claim-ahead never bends the order"):
- **Order.** Each line is a heap on `(priority DESC, run_at, id)`; with weighted queues,
  jobs of one priority start in the weights' proportions (stride scheduling, `Turns`).
- **A job that never ran is never charged.** A thread starts only a *ready* job, one the
  table marks as such (`began_at`): the claim readies the jobs for the free slots, the
  readier the next few in line just before the slots need them (`to_ready`). A rescue
  gives a claimed job's attempt back, so a worker that dies costs its claimed jobs
  nothing, and at most those few ready ones an attempt each.
- **No hoarding.** What waits here is bounded in count (`prefetch`) and in time: no more
  than the threads are expected to start within `window` seconds (`Estimates`); when an
  estimate rises, `surplus()` hands back what would now wait longer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping

from pgjobs.types import ClaimedJob
from pgjobs.worker.claim_lines import Held, Line, Turns
from pgjobs.worker.estimates import Estimates
from pgjobs.worker.idle_threads import IdleThreads

# The default of `window`: claim ahead what the threads should start within this many
# seconds. The SPEC caps it at one second; a quarter keeps a backlog of millisecond jobs
# claimed hundreds at a time (docs/architecture.md, "No hoarding").
DEFAULT_WINDOW = 0.25


class ClaimBuffer:
    """Claimed jobs waiting for a slot, and the jobs running in the slots: thread jobs and
    async jobs each in a line of their own, under one claim bound.

    It wakes the parts that act on it through the callbacks the assembly gives it
    (`on_room`, `on_ready_wanted`, `on_async_jobs`), never knowing who they are.
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
        self.concurrency = concurrency  # executor threads
        self.async_slots = async_slots  # 0: the App has no `async def` task
        self._threads = Line(concurrency)
        self._async = Line(async_slots)
        self.estimates = estimates or Estimates()
        self.prefetch = prefetch  # jobs held beyond the free slots, at most
        self.window = window
        self.is_async = is_async
        self.clock = clock
        self._readying: list[tuple[Line, Held]] = []
        self._weights = weights
        self._turns = Turns()
        self._ahead = 0  # jobs the last sizing allowed beyond the free slots
        self._recheck = False  # an estimate rose: some held job may now wait too long
        self._closed = False
        # Called, and the part called (fetcher, readier) not found idle since: no need again.
        self._room_called = self._ready_called = False
        self._lock = threading.Lock()
        self._idle = IdleThreads(self._lock)
        self._on_room: Callable[[], None] = lambda: None
        self._on_ready_wanted: Callable[[], None] = lambda: None
        self._on_async_jobs: Callable[[], None] = lambda: None

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call `callback` when there is room to claim, or maybe jobs to hand back."""
        self._on_room = callback

    def on_ready_wanted(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the ready jobs run low."""
        self._on_ready_wanted = callback

    def on_async_jobs(self, callback: Callable[[], None]) -> None:
        """Call `callback` when async jobs became ready."""
        self._on_async_jobs = callback

    @property
    def _lines(self) -> tuple[Line, ...]:
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
            wants = self._wants_jobs()
            self._room_called = self._room_called and wants  # False: to be called again
            return wants

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
            now = self.clock()
            return sum(max(0, line.ready_target(now) - len(line.ready)) for line in self._lines)

    def add(self, jobs: Collection[ClaimedJob], ready: Collection[int] = ()) -> None:
        """Jobs the fetcher claimed (at most `room()` of them); `ready`: the ids the
        claim readied for the threads."""
        async_ready = False
        with self._lock:
            of = self.estimates.of
            turns = self._turns.of(jobs, self._weights)
            for job, turn in zip(jobs, turns, strict=True):
                line = self._async if self.async_slots and self.is_async(job) else self._threads
                held = Held(-job.priority, turn, job.run_at_epoch, job.id, of(job.task), job)
                readied = job.id in ready
                line.push(held, ready=readied)
                async_ready = async_ready or (readied and line is self._async)
            self._wake_one()
            # Idle threads asked for ready jobs before these were claimed: ask again.
            self._ready_called = False
            wants_ready = self._wants_ready_edge(*self._lines)
        if async_ready:
            self._on_async_jobs()
        if wants_ready:
            self._on_ready_wanted()

    # --- the fetcher's side: readying --------------------------------------------------

    def wants_ready(self) -> bool:
        """Claimed jobs should be readied: the ready ones run low."""
        with self._lock:
            wants = not self._closed and any(
                line.short_of_ready(self.clock) for line in self._lines
            )
            self._ready_called = self._ready_called and wants  # False: to be called again
            return wants

    def to_ready(self) -> list[ClaimedJob]:
        """The next claimed jobs in line to ready for the slots (then `readied`)."""
        with self._lock:
            if self._closed:
                return []
            now = self.clock()
            for line in self._lines:
                if line.short_of_ready(self.clock):
                    want = line.ready_target(now) - len(line.ready) - line.readying
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
            while not self._may_take():
                if self._closed:
                    return None
                if self._wants_ready_edge(self._threads):
                    self._on_ready_wanted()
                self._idle.wait()
            held = self._threads.pop()
            if self._weights is not None:
                self._turns.reached(held.turn)
            self._wake_one()
            wants_ready = self._wants_ready_edge(self._threads)
        if wants_ready:
            self._on_ready_wanted()
        return held.job

    def take_async(self) -> ClaimedJob | None:
        """The next ready async job, if one waits and an async slot is free (never
        blocks)."""
        with self._lock:
            if not self._async.ready or self._async.free() <= 0:
                held = None
            else:
                held = self._async.pop()
                self._turns.reached(held.turn)
            wants_ready = self._wants_ready_edge(self._async)
        if wants_ready:
            self._on_ready_wanted()
        return None if held is None else held.job

    def _wants_ready_edge(self, *lines: Line) -> bool:
        """Whether to call the readier now: some line runs short, and it was not called."""
        if self._ready_called or not any(line.short_of_ready(self.clock) for line in lines):
            return False
        self._ready_called = True
        return True

    def _wake_one(self) -> None:
        """Wake an idle thread if the ready jobs want one more (see IdleThreads)."""
        if self._idle.may_wake() and self._may_take():
            self._idle.wake_one()

    def _may_take(self) -> bool:
        """Whether a thread running nothing should take a job: one is ready and wants one
        more thread than those running (`Line.more_hands`); else it is left to them."""
        threads = self._threads
        return bool(threads.ready) and threads.more_hands(
            self.estimates.mean is None, self._idle.stalled
        )

    def unstall(self, stalled: int) -> None:
        """`stalled` thread jobs run far past what short jobs take (the watchdog's count):
        they no longer count as hands for the ready jobs, which may wake a thread."""
        with self._lock:
            self._idle.stalled = stalled
            self._wake_one()

    def has_ready(self) -> bool:
        return bool(self._threads.ready)  # read without the lock: a hint for the watchdog

    def done(self, job: ClaimedJob, duration: float) -> None:
        """A thread finished `job` after `duration` seconds and handed its outcome on."""
        self._ended(self._threads, job, duration)

    def done_async(self, job: ClaimedJob, duration: float) -> None:
        """An async job finished and its outcome was handed to the completer."""
        self._ended(self._async, job, duration)

    def _ended(self, line: Line, job: ClaimedJob, duration: float) -> None:
        with self._lock:
            line.ended(job.id, self.clock())
            rose = self.estimates.observe(job.task, duration) and self._may_overflow(job.task)
            if rose:
                self._recheck = True
            wants = rose or (not self._room_called and self._wants_jobs())
            self._room_called = self._room_called or wants
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
            return self._idle.count

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

        def gone(held: Held) -> bool:
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
        """Accept no more jobs; the held ones not started (idle threads get None)."""
        with self._lock:
            self._closed = True
            for line, held in self._readying:
                line.unready(held)
            self._readying = []
            unstarted = [job for line in self._lines for job in line.clear()]
            self._idle.wake_all()
            return unstarted
