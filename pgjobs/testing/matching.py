"""What a test looks for among the jobs, and why a job is not it.

Matching is done in Python on the rows a query narrowed down by task, queue and state,
so a test can compare with anything that has `==` (`unittest.mock.ANY` included) and a
failed assertion can say, for each near miss, which field differed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from pgjobs.tasks import Task
from pgjobs.types import Job, JobState

# A job's delay is `run_at - created_at`, both set by one statement's `now()`, so they
# agree to the microsecond; the tolerance only absorbs float seconds.
_DELAY_TOLERANCE = 0.001

State = str | JobState


class JobFilters(TypedDict, total=False):
    """The options a test may check besides the task and its arguments.

    `state` defaults to `available` (enqueued and not run yet); None matches every
    state. `delay` is seconds (or a timedelta) between enqueue and `run_at`. `where` is
    any predicate on the `Job`.
    """

    queue: str
    state: State | Collection[State] | None
    priority: int
    max_attempts: int
    unique_key: str
    run_at: datetime
    delay: float | timedelta
    scheduled_at: datetime
    where: Callable[[Job], bool]


@dataclass(frozen=True)
class JobPattern:
    """A description of the jobs a test expects; unset fields match anything."""

    task: str | None = None
    args: Mapping[str, Any] | None = None
    states: tuple[JobState, ...] | None = (JobState.AVAILABLE,)
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    unique_key: str | None = None
    run_at: datetime | None = None
    delay: float | None = None
    scheduled_at: datetime | None = None
    where: Callable[[Job], bool] | None = None

    @classmethod
    def build(
        cls,
        task: Task[Any, Any] | str | None,
        args: Mapping[str, Any] | None,
        filters: JobFilters,
    ) -> JobPattern:
        """From the arguments of `Jobs.find`, checked: a mistake raises ValueError."""
        unknown = set(filters) - set(JobFilters.__annotations__)
        if unknown:
            raise TypeError(f"unknown job filter(s): {', '.join(sorted(unknown))}")
        if args is not None and not isinstance(args, Mapping):
            raise ValueError(f"args must be a mapping of argument names, got {args!r}")
        delay = filters.get("delay")
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        return cls(
            task=task.name if isinstance(task, Task) else task,
            args=args,
            states=_states(filters.get("state", JobState.AVAILABLE)),
            queue=filters.get("queue"),
            priority=filters.get("priority"),
            max_attempts=filters.get("max_attempts"),
            unique_key=filters.get("unique_key"),
            run_at=filters.get("run_at"),
            delay=seconds,
            scheduled_at=filters.get("scheduled_at"),
            where=filters.get("where"),
        )

    def mismatches(self, job: Job) -> list[str]:
        """Why `job` does not match, one phrase per field; empty when it does."""
        found: list[str] = []
        if self.task is not None and job.task != self.task:
            found.append(f"task is {job.task!r}")
        for name, expected in (self.args or {}).items():
            if name not in job.payload:
                found.append(f"args has no {name!r}")
            elif expected != job.payload[name]:  # expected first: mock.ANY works
                found.append(f"args[{name!r}] is {job.payload[name]!r}, not {expected!r}")
        if self.states is not None and job.state not in self.states:
            found.append(f"state is {job.state.value}")
        for name in ("queue", "priority", "max_attempts", "unique_key", "run_at", "scheduled_at"):
            expected = getattr(self, name)
            actual = getattr(job, name)
            if expected is not None and expected != actual:
                found.append(f"{name} is {actual!r}, not {expected!r}")
        if self.delay is not None:
            actual_delay = (job.run_at - job.created_at).total_seconds()
            if abs(actual_delay - self.delay) > _DELAY_TOLERANCE:
                found.append(f"delay is {actual_delay:g}s, not {self.delay:g}s")
        if self.where is not None and not self.where(job):
            found.append("`where` is false")
        return found

    def matches(self, job: Job) -> bool:
        """Whether `job` is one of the jobs described."""
        return not self.mismatches(job)

    def describe(self) -> str:
        """The pattern as a reader would say it: `task 'a', args ⊇ {...}, state available`."""
        parts = []
        if self.task is not None:
            parts.append(f"task {self.task!r}")
        if self.args:
            parts.append(f"args including {dict(self.args)!r}")
        parts.append(
            "any state"
            if self.states is None
            else "state " + " or ".join(state.value for state in self.states)
        )
        for name in ("queue", "priority", "max_attempts", "unique_key", "run_at", "scheduled_at"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {value!r}")
        if self.delay is not None:
            parts.append(f"delay {self.delay:g}s")
        if self.where is not None:
            parts.append("`where`")
        return ", ".join(parts)


def describe_job(job: Job) -> str:
    """One line a failed assertion lists for a job."""
    return (
        f"#{job.id} {job.task} {job.state.value} queue={job.queue!r} args={job.payload!r} "
        f"priority={job.priority} attempts={job.attempts}/{job.max_attempts}"
    )


def _states(value: State | Collection[State] | None) -> tuple[JobState, ...] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, (str, JobState)) else list(value)
    try:
        return tuple(JobState(state) for state in values)
    except ValueError:
        names = ", ".join(state.value for state in JobState)
        raise ValueError(f"state must be among {names}, got {value!r}") from None
