"""Messages to a worker on the schema's control channel, which the listener hands here.

`pgjobs cancel` of a running job sends `{"cancel": <job id>, "worker": <worker id>}`
when it commits (see CANCEL_JOBS). The worker named in it drops the job as the heartbeat
would on finding it cancelled, so the task's stop flag is set within moments instead of
at the next heartbeat; the heartbeat still covers a message lost during a reconnect.
Every worker hears every message and ignores those for others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection

log = logging.getLogger("pgjobs.worker")


class ControlMessages:
    """Acts on the control messages addressed to worker `worker_id`."""

    def __init__(self, worker_id: str, on_cancelled: Callable[[Collection[int]], None]) -> None:
        self.worker_id = worker_id
        self.on_cancelled = on_cancelled

    def handle(self, payload: str) -> None:
        """One notification's payload; anything not meant for this worker is ignored."""
        try:
            message = json.loads(payload)
        except ValueError:
            log.debug("ignored a control message that is not JSON", extra={"payload": payload})
            return
        if not isinstance(message, dict) or message.get("worker") != self.worker_id:
            return
        job_id = message.get("cancel")
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            log.info(
                "job cancelled while running: stop flag set",
                extra={"job_id": job_id, "worker_id": self.worker_id},
            )
            self.on_cancelled({job_id})
