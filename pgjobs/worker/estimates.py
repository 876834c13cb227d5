"""How long tasks take in this worker: what the claim-ahead is sized by.

The claim buffer may hold only what the worker expects to start within its window, so
it needs to know how long jobs take. Each finished attempt moves a moving average of its
task's duration and one over every task; an attempt still running past the window moves
its task's estimate up to what it has run so far, so a slow task that was never measured
shows itself within one window instead of one whole run. Pure arithmetic with no clock
and no lock of its own: the buffer calls it under its lock.
"""

from __future__ import annotations

# Weight of the newest duration in a moving average: a task that turns slow moves its
# estimate most of the way within a handful of attempts.
SMOOTHING = 0.3
# An estimate that rises by more than this factor makes the buffer check what it holds.
MARKED_RISE = 1.5
# One attempt moves an estimate as if it had taken at most this many times the estimate:
# a short task whose thread waited for the CPU or the GIL, or paused for the garbage
# collector, now and then takes a hundred times its usual time, and must not make the
# buffer hand back hundreds of short jobs. A task that really turned slow gets there in
# a few attempts; one never measured is taken at its word at once.
MAX_STEP = 4.0


class Estimates:
    """Moving averages of attempt durations in seconds, per task and over all tasks."""

    def __init__(self, smoothing: float = SMOOTHING) -> None:
        self.smoothing = smoothing
        self.by_task: dict[str, float] = {}
        self.mean: float | None = None  # None until an attempt ended
        # Tasks never measured whose attempt has run this long already.
        self._running: dict[str, float] = {}

    def of(self, task: str) -> float:
        """The expected duration of a job of `task`: its own average, else the mean over
        every task, else 0 (nothing measured yet; the buffer then holds nothing ahead)."""
        estimate = self.by_task.get(task)
        if estimate is not None:
            return estimate
        return max(self.mean or 0.0, self._running.get(task, 0.0))

    def observe(self, task: str, seconds: float) -> bool:
        """An attempt of `task` took `seconds`; True when its estimate rose markedly."""
        # Once per finished job: the common case (a task measured before) inline.
        before = self.by_task.get(task)
        mean = self.mean
        if before and mean:
            step = MAX_STEP * before
            after = before + self.smoothing * ((seconds if seconds < step else step) - before)
            self.by_task[task] = after
            step = MAX_STEP * mean
            self.mean = mean + self.smoothing * ((seconds if seconds < step else step) - mean)
            return after > MARKED_RISE * before
        assumed = self.of(task)
        self.by_task[task] = seconds if before is None else self._moved(before, seconds)
        self._running.pop(task, None)
        if mean is None:
            self.mean = seconds
            return False  # nothing was held ahead on an assumption yet
        self.mean = self._moved(mean, seconds)
        return self.by_task[task] > MARKED_RISE * assumed

    def running_for(self, task: str, seconds: float) -> bool:
        """An attempt of `task`, a task never measured here, has run `seconds` so far;
        True when that raised what the buffer assumes of it markedly.

        A task with durations of its own keeps them: a short one stalled now and then
        (CPU, GIL, garbage collector) is no reason to hand back what the buffer holds,
        and one that really turned slow moves its estimate as its attempts end.
        """
        if task in self.by_task:
            return False
        assumed = self.of(task)
        if seconds <= MARKED_RISE * assumed:
            return False
        self._running[task] = seconds
        return True

    def _moved(self, estimate: float, seconds: float) -> float:
        """`estimate` moved towards `seconds`, one outlier's pull bounded (`MAX_STEP`)."""
        sample = min(seconds, MAX_STEP * estimate) if estimate > 0 else seconds
        return estimate + self.smoothing * (sample - estimate)
