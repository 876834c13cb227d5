"""The readier: readies the next claimed jobs in line just before the threads need them.

A thread starts only a *ready* job, one the table knows as such, so that a rescue can
tell the jobs a dead worker only held from those it may have run (see `ClaimBuffer`). The
claim readies the jobs for idle threads; this service readies more whenever the ready
ones run low, by writing the ids of every job this worker readied and has not settled
into its row (READY_JOBS), on a connection of its own so that a claim on its way never
keeps the threads waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from pgjobs.data.claims import ClaimStatements
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.connection import Connections
from pgjobs.worker.service import StatementService, StopPhase


class Readier(StatementService[ClaimStatements]):
    """Readies claimed jobs in `buffer` when its slots run short of ready ones (the buffer
    wakes it then)."""

    stop_phase = StopPhase.INTAKE

    def __init__(
        self,
        connection: Connections,
        statements: ClaimStatements,
        buffer: ClaimBuffer,
        worker_id: str,
        *,
        unsettled_ids: Callable[[], Collection[int]],
        interval: float = 1.0,
    ) -> None:
        super().__init__("readier", interval, connection, statements)
        self.buffer = buffer
        self.worker_id = worker_id
        self.unsettled_ids = unsettled_ids

    def run_once(self) -> int:
        """Ready the jobs the threads will need next; returns how many."""
        if not self.buffer.wants_ready():
            return 0
        jobs = self.buffer.to_ready()
        if not jobs:
            return 0
        # The new ones, and every job readied before that this worker has not settled:
        # ready, running, or with its outcome not written yet.
        ids = {job.id for job in jobs} | set(self.buffer.ready_ids())
        ids.update(self.unsettled_ids())
        try:
            self.connection.run(
                lambda conn: self.statements.ready_jobs(conn, ids, worker_id=self.worker_id),
                attempts=2,
            )
        except BaseException:
            self.buffer.unready()
            raise
        self.buffer.readied()
        return len(jobs)

    def next_wait(self) -> float:
        return 0.0 if self.buffer.wants_ready() else self.interval
