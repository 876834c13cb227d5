"""The registry: keeps this worker's row in `<schema>.workers`, and elects a leader.

Every beat upserts the row (`last_heartbeat_at = now()`), so `pgjobs workers` and plain
SQL see the live fleet. The same statement says whether this worker is the maintenance
leader: the longest-running worker that is not lost. The leader deletes the rows of
workers lost long ago and samples the queue gauges for the metrics, so that work is done
once for the fleet rather than once per worker. Leadership needs no lock and no extra
round trip: if the leader dies, the next oldest worker takes over once the dead one
counts as lost (its `rescue_after`), and at once after a clean exit, which deletes the
row.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from pgjobs.db import first_line
from pgjobs.fleet import LOST_WORKER_RETENTION, WorkerRegistration
from pgjobs.store import Store
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.service import LoopService

if TYPE_CHECKING:
    from pgjobs.worker.worker import WorkerSettings

log = logging.getLogger("pgjobs.worker")


def registration(worker_id: str, settings: WorkerSettings) -> WorkerRegistration:
    """This process's row, from the worker's settings."""
    from pgjobs import __version__

    weights = settings.queues.weights
    return WorkerRegistration(
        id=worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=None if weights is None else list(weights),
        concurrency=settings.concurrency,
        version=__version__,
        rescue_after=settings.rescue_after,
    )


class WorkerRegistry(LoopService):
    """Refreshes this worker's row every `interval` seconds; deletes it on stop."""

    def __init__(
        self,
        connection: ResilientConnection,
        store: Store,
        worker: WorkerRegistration,
        *,
        interval: float,
        keep_lost: float = LOST_WORKER_RETENTION.total_seconds(),
    ) -> None:
        super().__init__("registry", interval)
        self.connection = connection
        self.store = store
        self.worker = worker
        self.keep_lost = keep_lost
        self._leader = False

    def is_leader(self) -> bool:
        """Whether the last beat found this worker the maintenance leader."""
        return self._leader

    def run_once(self) -> bool:
        """Beat; as the leader, forget long-lost workers. Returns whether it leads."""
        try:
            leader = self.connection.run(
                lambda conn: self.store.register_worker(conn, self.worker), attempts=1
            )
        except BaseException:
            self._leader = False  # a failed beat proves nothing
            raise
        # Set only once the beat answers: cleared while it runs, a scrape would read a
        # leader that is not one, next to the queue gauges it exports.
        self._leader = leader
        if leader:
            forgotten = self.connection.run(
                lambda conn: self.store.forget_lost_workers(conn, keep_lost=self.keep_lost),
                attempts=1,
            )
            if forgotten:
                log.info("forgot lost workers", extra={"worker_ids": forgotten})
        return leader

    def stop(self, timeout: float) -> bool:
        """Stop beating and delete the row: a clean exit is not a lost worker."""
        self.request_stop()
        stopped = self.join(timeout)
        self._leader = False
        try:
            self.connection.run(
                lambda conn: self.store.deregister_worker(conn, self.worker.id), attempts=2
            )
        except Exception as error:
            # The row goes stale and is listed as lost, then forgotten; nothing else
            # depends on it.
            log.warning(
                "could not remove this worker from the registry",
                extra={"worker_id": self.worker.id, "error": first_line(error)},
            )
            stopped = False
        self.close()
        return stopped

    def close(self) -> None:
        self.connection.close()
