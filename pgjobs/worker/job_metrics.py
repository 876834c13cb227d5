"""Per-job metrics (outcomes, durations, queue lag) at a cost a draining worker does not
notice, exposed as a prometheus-client collector.

The official `Counter` and `Histogram` take a lock per increment: with the labels
lookups, the three a job needs cost several times more than the rest of what observing a
job costs. Here an executor thread notes the attempt as a tuple of plain values in a list
(an atomic append), and the notes are counted in batches, when a scrape asks or when a few
hundred have piled up. A batch is taken with two slice operations; a drain's batch (one
task, all completed) is recognised with C-level counts, and each histogram sorts its
values once and finds every bucket's count with one binary search per bound.

Keeping plain values rather than the event matters more than it seems: a tuple of strings
and floats leaves the garbage collector's lists at its first collection, while the event,
the job and the outcome are named tuples, which it tracks for good, traversing and
promoting them for as long as they wait to be counted. Keeping the events until the
completer's next batch (tried) tripled a drain's collections, about 4 us a job. A scrape
reads exactly what the official types would show.

Lag (from `run_at` to the start of the attempt) is the attempt's end, less its duration,
less `run_at`, so it is recorded when the attempt ends, and no second event per job is
needed.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate, repeat
from operator import sub
from typing import TYPE_CHECKING

from pgjobs.worker.events import LABELS, Ending, Event

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

# Seconds; jobs range from milliseconds to hours.
DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
# Seconds from run_at to start: an idle worker starts a job within milliseconds.
LAG_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
# Attempts noted before the emitting thread counts them itself: enough to make the batches
# pay, few enough that a fold (mostly C code, which holds the GIL throughout) stalls the
# worker's other threads for a fraction of a millisecond.
FOLD_AT = 256


class Distribution:
    """One histogram series: observations per bucket (not cumulative) and their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe_many(self, values: list[float], *, floor: float | None = None) -> None:
        """Count a batch (sorted in place): one sort, then one binary search per bound
        gives each bucket's count, all in C. A value below `floor` counts as `floor`."""
        values.sort()
        at_or_below = list(map(bisect_right, repeat(values), self.bounds))
        for bucket, count in enumerate(map(sub, at_or_below, [0, *at_or_below[:-1]])):
            self.counts[bucket] += count
        self.counts[-1] += len(values) - at_or_below[-1]
        if floor is not None and values and values[0] < floor:
            clipped = bisect_left(values, floor)
            self.sum += floor * clipped + sum(values[clipped:])
        else:
            self.sum += sum(values)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (`le`, observations at or below it), +Inf last."""
        names = [str(float(bound)) for bound in self.bounds] + ["+Inf"]
        return list(zip(names, accumulate(self.counts), strict=True))


class JobMetrics:
    """Subscribe `job_ended` to a worker's JobEnded events; register the object with a
    prometheus-client registry as a collector."""

    def __init__(self) -> None:
        # (queue, task, ending, outcome state, duration, lag): plain values only.
        self._ended: list[tuple[str, str, str, str, float, float]] = []
        self._fold_lock = threading.Lock()
        self.finished: dict[tuple[str, str, str], int] = {}
        self.durations: dict[str, Distribution] = {}
        self.lags: dict[str, Distribution] = {}

    def job_ended(self, event: Event) -> None:
        """Note the attempt as plain values; everything else waits for the next fold."""
        job, ending, outcome, duration, _, ended_at, _ = event  # type: ignore[misc]  # JobEnded
        # The state as plain text: an enum member would keep the note tracked (see above).
        state = str(outcome.state) if outcome is not None else ""
        lag = ended_at - duration - job.run_at_epoch
        self._ended.append((job.queue, job.task, ending._value_, state, duration, lag))
        # One thread folds; the others go on with their jobs rather than queue up behind
        # it on the lock (with dozens of threads, that queue cost more than the counting).
        if len(self._ended) > FOLD_AT and self._fold_lock.acquire(blocking=False):
            try:
                self._fold()
            finally:
                self._fold_lock.release()

    def fold(self) -> None:
        """Count the attempts noted since the last fold."""
        with self._fold_lock:
            self._fold()

    def _fold(self) -> None:
        """The fold itself; the caller holds the lock."""
        # Executor threads append meanwhile, at the end: take the first `count` notes.
        count = len(self._ended)
        if not count:
            return
        batch = self._ended[:count]
        del self._ended[:count]
        queues, tasks, endings, _, durations, lags = zip(*batch, strict=True)
        if (
            endings.count(Ending.COMPLETED.value) == count
            and queues.count(queues[0]) == count
            and tasks.count(tasks[0]) == count
        ):
            # A drain's batch: one task, all succeeded. Counted without a Python loop.
            label = LABELS[Ending.COMPLETED].outcome
            self._count(queues[0], tasks[0], label, list(durations), list(lags))
            return
        # Otherwise group by what the labels depend on, then label each group once.
        groups: dict[tuple[str, str, str, str], tuple[list[float], list[float]]] = {}
        for queue, task, ending, state, duration, lag in batch:
            group = groups.get((queue, task, ending, state))
            if group is None:
                group = groups[(queue, task, ending, state)] = ([], [])
            group[0].append(duration)
            group[1].append(lag)
        for (queue, task, ending, state), (group_durations, group_lags) in groups.items():
            if ending == Ending.LATE.value:
                continue  # the attempt was settled (and counted) already
            told = Ending(ending)
            timed = group_durations if LABELS[told].timed else []
            self._count(queue, task, told.label(state), timed, group_lags)

    def _count(
        self, queue: str, task: str, label: str, durations: list[float], lags: list[float]
    ) -> None:
        """Add one group of attempts: their lags, their count, and the durations of those
        the task itself ended."""
        # A clock a little behind the database's must not read as a negative lag.
        self._series(self.lags, queue, LAG_BUCKETS).observe_many(lags, floor=0.0)
        if label:
            key = (queue, task, label)
            self.finished[key] = self.finished.get(key, 0) + len(lags)
        if durations:
            self._series(self.durations, task, DURATION_BUCKETS).observe_many(durations)

    @staticmethod
    def _series(
        series: dict[str, Distribution], label: str, bounds: Sequence[float]
    ) -> Distribution:
        found = series.get(label)
        if found is None:
            found = series[label] = Distribution(bounds)
        return found

    def collect(self) -> Iterator[Metric]:
        """The families a scrape shows (prometheus-client's collector protocol)."""
        from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily

        self.fold()
        with self._fold_lock:
            finished = CounterMetricFamily(
                "pgjobs_jobs_finished",
                "Attempts ended, by outcome: completed, retried, failed, snoozed, cancelled.",
                labels=["queue", "task", "outcome"],
            )
            for key, count in sorted(self.finished.items()):
                finished.add_metric(list(key), count)
            duration = HistogramMetricFamily(
                "pgjobs_job_duration_seconds", "Time a task ran, per attempt.", labels=["task"]
            )
            for task, series in sorted(self.durations.items()):
                duration.add_metric([task], series.cumulative(), series.sum)
            lag = HistogramMetricFamily(
                "pgjobs_queue_lag_seconds",
                "Time from a job's run_at to the start of its attempt on this worker.",
                labels=["queue"],
            )
            for queue, series in sorted(self.lags.items()):
                lag.add_metric([queue], series.cumulative(), series.sum)
        yield from (finished, duration, lag)
