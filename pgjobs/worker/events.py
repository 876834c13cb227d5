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

from pgjobs.worker.jobs import ClaimedJob, Outcome

log = logging.getLogger("pgjobs.worker")


class Ending(str, Enum):
    """How an attempt ended, as the executor saw it."""

    COMPLETED = "completed"
    RETRIED = "retried"  # failed, another attempt is scheduled
    FAILED = "failed"  # failed for good (out of attempts, or FailJob)
    SNOOZED = "snoozed"
    TIMED_OUT = "timed_out"  # then retried or failed, as `outcome.state` says
    PUT_BACK = "put_back"  # shutdown gave the job back
    TAKEN_AWAY = "taken_away"  # cancelled or rescued while it ran
    LATE = "late"  # the task returned after its attempt was already settled


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
    `ended_at` is when, in seconds since the epoch."""

    job: ClaimedJob
    ending: Ending
    outcome: Outcome | None
    duration: float
    worker_id: str
    ended_at: float


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
