"""Maintenance: the heartbeat that keeps this worker's jobs, and the rescuer.

Both are plain passes (`heartbeat_once`, `rescue_once`) that tests call directly; the
loop around them only decides when. Every worker runs the rescuer, and a
transaction-scoped advisory lock inside the statement lets one at a time do the work,
so there is no leader to elect and nothing to hand over when a worker dies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pgjobs.queries import Queries
from pgjobs.worker.connection import ResilientConnection

log = logging.getLogger("pgjobs.worker")


class Maintenance:
    """Heart-beats this worker's running jobs and rescues other workers' lost ones."""

    def __init__(
        self,
        connection: ResilientConnection,
        queries: Queries,
        worker_id: str,
        *,
        held_ids: Callable[[], list[int]],
        on_lost: Callable[[set[int]], None],
        heartbeat_interval: float,
        rescue_after: float,
    ) -> None:
        self.connection = connection
        self.queries = queries
        self.worker_id = worker_id
        self.held_ids = held_ids
        self.on_lost = on_lost
        self.heartbeat_interval = heartbeat_interval
        self.rescue_after = rescue_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgjobs-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def heartbeat_once(self) -> None:
        """Refresh `heartbeat_at` of every held job in one statement; stop lost ones."""
        ids = self.held_ids()
        if not ids:
            return
        params = {"ids": ids, "worker_id": self.worker_id}
        rows = self.connection.run(
            lambda conn: conn.execute(self.queries.heartbeat, params).fetchall(), attempts=1
        )
        lost = set(ids) - {row[0] for row in rows}
        # A job settled between reading the ids and the statement is not lost; the
        # executor ignores ids it no longer holds.
        if lost:
            self.on_lost(lost)

    def rescue_once(self) -> list[tuple[int, str]]:
        """Return to the queue (or fail) jobs whose worker stopped heart-beating."""
        params = {
            "rescue_after": self.rescue_after,
            "lock_name": f"pgjobs.rescue:{self.queries.schema}",
            "channel": self.queries.channel,
        }
        rows = self.connection.run(
            lambda conn: conn.execute(self.queries.rescue, params).fetchall(), attempts=1
        )
        rescued = [(row[0], row[1]) for row in rows]
        for job_id, state in rescued:
            log.warning(
                "rescued job of a lost worker",
                extra={"job_id": job_id, "state": state, "worker_id": self.worker_id},
            )
        return rescued

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            for step in (self.heartbeat_once, self.rescue_once):
                try:
                    step()
                except Exception as error:
                    log.warning(
                        "maintenance step failed, will retry",
                        extra={"step": step.__name__, "error": str(error).strip()},
                    )
                    # No rescue in a pass whose heartbeat failed: right after an outage
                    # it would find this worker's own live jobs stale and take them.
                    break

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.connection.close()
