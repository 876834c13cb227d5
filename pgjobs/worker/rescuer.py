"""The rescuer: returns the jobs of workers that died to the queue.

A job whose heartbeat is older than `rescue_after` belonged to a worker that crashed or
lost its host. If its attempt had begun, it goes back to `available` (or `failed` when
it has no attempt left) with a "worker lost" entry in `errors`; if it only waited in
that worker's claim buffer, it goes back with the attempt given back and no entry.
It is maintenance: only the leader runs it (`worker/maintenance.py`), so a dead leader's
own lost jobs wait for the next leader, elected once the dead one counts as lost, which
is when its jobs become rescuable. The transaction-scoped advisory lock inside the
statement stays as a guard for the beat in which two workers may both think they lead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pgjobs.data.maintenance import MaintenanceStatements
from pgjobs.worker.connection import Connections
from pgjobs.worker.service import StatementService

log = logging.getLogger("pgjobs.worker")


class Rescuer(StatementService[MaintenanceStatements]):
    """Rescues other workers' lost jobs every `interval` seconds."""

    def __init__(
        self,
        connection: Connections,
        statements: MaintenanceStatements,
        worker_id: str,
        *,
        rescue_after: float,
        interval: float,
        may_rescue: Callable[[], bool],
    ) -> None:
        super().__init__("rescuer", interval, connection, statements)
        self.worker_id = worker_id
        self.rescue_after = rescue_after
        self.may_rescue = may_rescue

    def run_once(self) -> list[tuple[int, str, bool]]:
        """Return (or fail) jobs whose worker stopped heart-beating: [(id, new state,
        whether its attempt had begun)]."""
        if not self.may_rescue():
            return []
        rescued: list[tuple[int, str, bool]] = self.connection.run(
            lambda conn: self.statements.rescue(conn, rescue_after=self.rescue_after), attempts=1
        )
        for job_id, state, began in rescued:
            log.warning(
                "rescued job of a lost worker"
                if began
                else "returned a job a lost worker had claimed and not started",
                extra={"job_id": job_id, "state": state, "worker_id": self.worker_id},
            )
        return rescued
