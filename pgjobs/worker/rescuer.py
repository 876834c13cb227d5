"""The rescuer: returns the jobs of workers that died to the queue.

A job whose heartbeat is older than `rescue_after` belonged to a worker that crashed or
lost its host. If its attempt had begun, it goes back to `available` (or `failed` when
it has no attempt left) with a "worker lost" entry in `errors`; if it only waited in
that worker's claim buffer, it goes back with the attempt given back and no entry.
Every worker runs a rescuer, and a transaction-scoped advisory lock inside the statement
lets one at a time do the work, so there is no leader to elect and nothing to hand over
when a worker dies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pgjobs.store import Store
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.service import LoopService

log = logging.getLogger("pgjobs.worker")


class Rescuer(LoopService):
    """Rescues other workers' lost jobs every `interval` seconds."""

    def __init__(
        self,
        connection: ResilientConnection,
        store: Store,
        worker_id: str,
        *,
        rescue_after: float,
        interval: float,
        may_rescue: Callable[[], bool],
    ) -> None:
        super().__init__("rescuer", interval)
        self.connection = connection
        self.store = store
        self.worker_id = worker_id
        self.rescue_after = rescue_after
        self.may_rescue = may_rescue

    def run_once(self) -> list[tuple[int, str, bool]]:
        """Return (or fail) jobs whose worker stopped heart-beating: [(id, new state,
        whether its attempt had begun)]."""
        if not self.may_rescue():
            return []
        rescued = self.connection.run(
            lambda conn: self.store.rescue(conn, rescue_after=self.rescue_after), attempts=1
        )
        for job_id, state, began in rescued:
            log.warning(
                "rescued job of a lost worker"
                if began
                else "returned a job a lost worker had claimed and not started",
                extra={"job_id": job_id, "state": state, "worker_id": self.worker_id},
            )
        return rescued

    def close(self) -> None:
        self.connection.close()
