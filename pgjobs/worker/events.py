"""What happens in a worker, as typed events, and the one place they are sent.

The executor and the completer emit events; logging subscribes first, and metrics, the
worker registry and `pgjobs.testing` can observe the same stream without the worker's
parts knowing about them. Subscribers run in the emitting thread, so they must be quick
and must not raise (an exception is logged and swallowed so one bad subscriber cannot
stop a worker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from pgjobs.types import ClaimedJob, JobState, Outcome

log = logging.getLogger("pgjobs.worker")


class Ending(str, Enum):
    """How an attempt ended, as the executor saw it.

    The job's new state is its outcome's (`Outcome.state`, a `JobState`); an ending says
    why, and `LABELS` says how each one is counted and logged.
    """

    COMPLETED = "completed"
    RETRIED = "retried"  # failed, another attempt is scheduled
    FAILED = "failed"  # failed for good (out of attempts, or FailJob)
    SNOOZED = "snoozed"
    TIMED_OUT = "timed_out"  # then retried or failed, as `outcome.state` says
    PUT_BACK = "put_back"  # shutdown gave the job back
    TAKEN_AWAY = "taken_away"  # cancelled or rescued while it ran
    LATE = "late"  # the task returned after its attempt was already settled

    def label(self, state: str) -> str:
        """The metrics' `outcome` label of an attempt that ended so and whose outcome
        writes `state` ("" when the job's attempt had no outcome of its own)."""
        if self is Ending.TIMED_OUT and state == JobState.FAILED:
            return LABELS[Ending.FAILED].outcome
        return LABELS[self].outcome


def ending_of(outcome: Outcome) -> Ending:
    """The ending of an attempt whose task returned or raised, by its outcome."""
    # Once per job: a dict lookup, not attribute lookups on the enum classes (each costs
    # as much as the rest of this function on Python 3.11).
    ending = _ENDING_BY_STATE.get(outcome.state)
    if ending is None:
        return _SNOOZED if outcome.error is None else _RETRIED
    return ending


_ENDING_BY_STATE = {JobState.COMPLETED: Ending.COMPLETED, JobState.FAILED: Ending.FAILED}
_SNOOZED, _RETRIED = Ending.SNOOZED, Ending.RETRIED


class Labels(NamedTuple):
    """How an ending is told: the metrics' `outcome` label, whether its duration is the
    task's own (it returned, raised or timed out), and its log line."""

    outcome: str
    timed: bool
    level: int
    message: str


# The one place that names endings for people. A cancel and a rescue look alike to the
# executor (`TAKEN_AWAY`); the metrics count both as cancelled. A put-back (shutdown) and
# a late result are no outcome of the job.
LABELS: dict[Ending, Labels] = {
    Ending.COMPLETED: Labels("completed", True, logging.DEBUG, "job completed"),
    Ending.RETRIED: Labels("retried", True, logging.WARNING, "job attempt failed"),
    Ending.FAILED: Labels("failed", True, logging.ERROR, "job failed"),
    Ending.SNOOZED: Labels("snoozed", True, logging.INFO, "job snoozed"),
    Ending.TIMED_OUT: Labels("retried", True, logging.WARNING, "job timed out"),
    Ending.PUT_BACK: Labels("", False, logging.INFO, "job put back"),
    Ending.TAKEN_AWAY: Labels(
        "cancelled", False, logging.WARNING, "job taken away (cancelled or rescued)"
    ),
    Ending.LATE: Labels("", False, logging.INFO, "late result ignored: attempt already settled"),
}


@dataclass(frozen=True)
class WorkerStarted:
    """The worker's services are running."""

    worker_id: str
    details: dict[str, object]


class JobStarted(NamedTuple):
    """An executor thread began running a claimed job."""

    job: ClaimedJob
    worker_id: str


class JobEnded(NamedTuple):
    """An attempt was settled; `outcome` is what will be written (None: nothing).
    `ended_at` is when, in seconds since the epoch; `error` what the task raised."""

    job: ClaimedJob
    ending: Ending
    outcome: Outcome | None
    duration: float
    worker_id: str
    ended_at: float
    error: BaseException | None = None


@dataclass(frozen=True)
class OutcomesWritten:
    """The completer wrote a batch; `applied` are the ids the table accepted."""

    outcomes: Sequence[Outcome]
    applied: frozenset[int]


@dataclass(frozen=True)
class WorkerStopped:
    """The worker shut down; `clean` when every outcome was written."""

    worker_id: str
    put_back: int
    clean: bool


Event = WorkerStarted | JobStarted | JobEnded | OutcomesWritten | WorkerStopped
Subscriber = Callable[[Event], None]


EVENT_TYPES: tuple[type[Event], ...] = (
    WorkerStarted,
    JobStarted,
    JobEnded,
    OutcomesWritten,
    WorkerStopped,
)


class EventBus:
    """Sends each event to the subscribers of its type, in subscription order.

    Emitters ask `wants(type)` first, so an event nobody listens to is never built:
    per-job events are on the hot path.
    """

    def __init__(self) -> None:
        self._subscribers: dict[type[Event], tuple[Subscriber, ...]] = {}
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber, *types: type[Event]) -> None:
        """Add a subscriber for these event types (all of them when none are given)."""
        with self._lock:
            for event_type in types or EVENT_TYPES:
                current = self._subscribers.get(event_type, ())
                self._subscribers[event_type] = (*current, subscriber)

    def wants(self, event_type: type[Event]) -> bool:
        """Whether anyone subscribed to `event_type`."""
        return event_type in self._subscribers

    def emit(self, event: Event) -> None:
        """Deliver `event` to its type's subscribers, in this thread."""
        for subscriber in self._subscribers.get(type(event), ()):
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed", extra={"event": type(event).__name__})
