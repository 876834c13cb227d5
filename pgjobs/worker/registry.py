"""The registry: keeps this worker's row in `<schema>.workers`, and elects the leader.

Every beat upserts the row (`last_heartbeat_at = now()`), so `pgjobs workers` and plain
SQL see the live fleet. The same statement says what this worker leads. The maintenance
leader, the longest-running worker that is not lost, does the fleet's upkeep: rescue,
forgetting long-lost workers (`LostWorkers`, below) and sampling the queue gauges. Each
duty a worker may decline (periodic enqueue, retention) goes to the longest-running live
worker that has it (`registration`), so a leader started with `--no-periodic` never
stops periodic jobs for the fleet. Each is done once for the fleet rather than once per
worker (`worker/maintenance.py`). Leadership needs no lock and no extra round trip: if a
leader dies, the next oldest worker takes over once the dead one counts as lost (its
`rescue_after`), and at once after a clean exit, which deletes the row. A worker alone
leads everything it does from its first beat.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from pgjobs.data.maintenance import MaintenanceStatements
from pgjobs.db import first_line
from pgjobs.fleet import LOST_WORKER_RETENTION
from pgjobs.types import WorkerRegistration
from pgjobs.worker.connection import Connections
from pgjobs.worker.service import StatementService, StopPhase
from pgjobs.worker.settings import WorkerSettings

log = logging.getLogger("pgjobs.worker")


MAINTENANCE = "maintenance"  # the fleet's upkeep, led by the longest-running live worker
PERIODIC = "periodic"
RETENTION = "retention"


def registration(
    worker_id: str, settings: WorkerSettings, *, has_schedules: bool
) -> WorkerRegistration:
    """This process's row, from the worker's settings: its duties are periodic enqueue
    when it has periodic tasks and `--no-periodic` is not given, and retention unless
    `--retention off`."""
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
        duties=[
            *([PERIODIC] if settings.periodic and has_schedules else []),
            *([RETENTION] if settings.retention is not None else []),
        ],
    )


class WorkerRegistry(StatementService[MaintenanceStatements]):
    """Refreshes this worker's row every `interval` seconds; deletes it on stop."""

    stop_phase = StopPhase.PRESENCE  # the row goes on a clean exit, after all else

    def __init__(
        self,
        connection: Connections,
        statements: MaintenanceStatements,
        worker: WorkerRegistration,
        *,
        interval: float,
    ) -> None:
        super().__init__("registry", interval, connection, statements)
        self.worker = worker
        self._leads: frozenset[str] = frozenset()
        self._on_leadership: Callable[[], None] = lambda: None

    def on_leadership(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a beat finds this worker leading more or less than before."""
        self._on_leadership = callback

    def is_leader(self) -> bool:
        """Whether the last beat found this worker the maintenance leader."""
        return MAINTENANCE in self._leads

    def leads(self, duty: str) -> bool:
        """Whether the last beat found this worker leading `duty`."""
        return duty in self._leads

    def run_once(self) -> frozenset[str]:
        """Beat; returns what this worker leads."""
        try:
            leads = frozenset(
                self.connection.run(
                    lambda conn: self.statements.register_worker(conn, self.worker), attempts=1
                )
            )
        except BaseException:
            self._lead(frozenset())  # a failed beat proves nothing
            raise
        # Set only once the beat answers: cleared while it runs, a scrape would read a
        # leader that is not one, next to the queue gauges it exports.
        self._lead(leads)
        return leads

    def _lead(self, leads: frozenset[str]) -> None:
        changed, self._leads = leads != self._leads, leads
        if changed:
            self._on_leadership()

    def stop(self, timeout: float) -> bool:
        """Stop beating and delete the row: a clean exit is not a lost worker."""
        self.request_stop()
        stopped = self.join(timeout)
        self._lead(frozenset())
        try:
            self.connection.run(
                lambda conn: self.statements.deregister_worker(conn, self.worker.id), attempts=2
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


class LostWorkers(StatementService[MaintenanceStatements]):
    """Deletes the rows of workers lost more than `keep_lost` seconds ago (maintenance:
    the leader's alone), so that `pgjobs workers` lists recent losses only."""

    def __init__(
        self,
        connection: Connections,
        statements: MaintenanceStatements,
        *,
        interval: float,
        keep_lost: float = LOST_WORKER_RETENTION.total_seconds(),
    ) -> None:
        super().__init__("lost-workers", interval, connection, statements)
        self.keep_lost = keep_lost

    def run_once(self) -> list[str]:
        """Forget the workers lost long ago; their ids."""
        forgotten: list[str] = self.connection.run(
            lambda conn: self.statements.forget_lost_workers(conn, keep_lost=self.keep_lost),
            attempts=1,
        )
        if forgotten:
            log.info("forgot lost workers", extra={"worker_ids": forgotten})
        return forgotten
