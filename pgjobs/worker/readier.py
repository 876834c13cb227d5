"""The readier: readies the next claimed jobs in line just before the threads need them.

A thread starts only a *ready* job, one the table knows as such, so that a rescue can
tell the jobs a dead worker only held from those it may have run (see `Capacity`). The
claim readies the jobs for idle threads; this service readies more whenever the ready
ones run low, by writing the ids of every job this worker readied and has not settled
into its row (READY_JOBS), on a connection of its own so that a claim on its way never
keeps the threads waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from pgjobs.store import Store
from pgjobs.worker.capacity import Capacity
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.service import LoopService


class Readier(LoopService):
    """Readies claimed jobs in `capacity` when its threads run short of ready ones."""

    def __init__(
        self,
        connection: ResilientConnection,
        store: Store,
        capacity: Capacity,
        worker_id: str,
        *,
        unsettled_ids: Callable[[], Collection[int]],
        interval: float = 1.0,
    ) -> None:
        super().__init__("readier", interval)
        self.connection = connection
        self.store = store
        self.capacity = capacity
        self.worker_id = worker_id
        self.unsettled_ids = unsettled_ids
        capacity.on_ready_wanted(self.wake)

    def run_once(self) -> int:
        """Ready the jobs the threads will need next; returns how many."""
        if not self.capacity.wants_ready():
            return 0
        jobs = self.capacity.to_ready()
        if not jobs:
            return 0
        # The new ones, and every job readied before that this worker has not settled:
        # ready, running, or with its outcome not written yet.
        ids = {job.id for job in jobs} | set(self.capacity.ready_ids())
        ids.update(self.unsettled_ids())
        try:
            self.connection.run(
                lambda conn: self.store.ready_jobs(conn, ids, worker_id=self.worker_id),
                attempts=2,
            )
        except BaseException:
            self.capacity.unready()
            raise
        self.capacity.readied()
        return len(jobs)

    def next_wait(self) -> float:
        return 0.0 if self.capacity.wants_ready() else self.interval

    def close(self) -> None:
        self.connection.close()
