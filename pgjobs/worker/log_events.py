"""Logging as a subscriber of the worker's events: the first observer, not a special one.

Failures are warnings and errors; a successful attempt is a DEBUG line, because at
thousands of jobs a second one log line per job costs more than running the job (turn
it on with `--log-level DEBUG`). Numbers are rounded to what a person reads.
"""

from __future__ import annotations

import logging
from typing import Any

from pgjobs.types import JobState
from pgjobs.worker.events import (
    LABELS,
    Event,
    JobEnded,
    JobStarted,
    WorkerStarted,
    WorkerStopped,
)

log = logging.getLogger("pgjobs.worker")


def logged_event_types() -> tuple[type[Event], ...]:
    """The events `log_event` writes at the configured level (job starts only at DEBUG)."""
    started = (JobStarted,) if log.isEnabledFor(logging.DEBUG) else ()
    return (WorkerStarted, *started, JobEnded, WorkerStopped)


def log_event(event: Event) -> None:
    """Write one structured log line for the events people need to see."""
    if isinstance(event, JobEnded):
        _, _, level, message = LABELS[event.ending]
        if log.isEnabledFor(level):
            log.log(level, message, extra=_ended_fields(event))
    elif isinstance(event, JobStarted):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job started", extra={**event.job.log_fields(), "worker_id": event.worker_id})
    elif isinstance(event, WorkerStarted):
        log.info("worker started", extra={"worker_id": event.worker_id, **event.details})
    elif isinstance(event, WorkerStopped):
        log.info(
            "worker stopped",
            extra={"worker_id": event.worker_id, "put_back": event.put_back, "clean": event.clean},
        )


def _ended_fields(event: JobEnded) -> dict[str, Any]:
    fields: dict[str, Any] = {
        **event.job.log_fields(),
        "worker_id": event.worker_id,
        "duration": round(event.duration, 4),
    }
    outcome = event.outcome
    if outcome is None:
        return fields
    fields["state"] = outcome.state
    if outcome.error is not None:
        fields["error"] = outcome.error["error"]
    if outcome.state == JobState.AVAILABLE and outcome.delay is not None:
        fields["retry_in"] = round(outcome.delay, 2)
    return fields
