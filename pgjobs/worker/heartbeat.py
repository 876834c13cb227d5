"""The heartbeat: keeps every job this worker holds visibly alive.

One statement per interval refreshes `heartbeat_at` of the jobs that are running,
claimed and waiting to start, or finished with their outcome not yet written. Ids that
do not come back were cancelled or rescued meanwhile, and their tasks are told to stop.

Each held job comes with what stands for this claim of it (the claimed job itself), and
what is found lost is reported with it: a job handed back and claimed again by this
worker while the beat was on its way is another claim, and must not be stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pgjobs.data.claims import ClaimStatements
from pgjobs.worker.connection import Connections
from pgjobs.worker.service import StatementService, StopPhase


class Heartbeat(StatementService[ClaimStatements]):
    """Refreshes this worker's held jobs every `interval` seconds."""

    stop_phase = StopPhase.UPKEEP  # after the last outcomes are written: it keeps them

    def __init__(
        self,
        connection: Connections,
        statements: ClaimStatements,
        worker_id: str,
        *,
        held: Callable[[], Mapping[int, object]],
        on_lost: Callable[[Mapping[int, object]], None],
        interval: float,
    ) -> None:
        super().__init__("heartbeat", interval, connection, statements)
        self.worker_id = worker_id
        self.held = held
        self.on_lost = on_lost
        self._current = True  # nothing held yet: nothing of ours can look stale

    def run_once(self) -> set[int]:
        """Refresh every held job in one statement; returns the ids found lost."""
        held = self.held()
        if not held:
            return set()
        ids = list(held)
        try:
            kept = self.connection.run(
                lambda conn: self.statements.heartbeat(conn, ids, worker_id=self.worker_id),
                attempts=1,
            )
        except Exception:
            self._current = False
            raise
        self._current = True
        lost = {job_id: claim for job_id, claim in held.items() if job_id not in kept}
        # A job settled between reading the ids and the statement is not lost; the
        # executor and the buffer ignore claims they no longer hold.
        if lost:
            self.on_lost(lost)
        return set(lost)

    def is_current(self) -> bool:
        """False from a failed beat until the next one succeeds.

        Right after an outage this worker's own jobs look stale in the table; the
        rescuer must not run on their account before a beat has refreshed them.
        """
        return self._current
