"""The completer: the one place that writes attempts' outcomes, in batches.

Executor threads hand outcomes over and wait for the write; the completer writes
whatever has piled up in a single statement. Under load that turns many small
transactions into one, and under no load it costs one round trip per outcome, with no
added latency. Because an executor thread (and so its slot) stays busy until its
outcome is written, a worker never holds more claimed jobs than it has threads, and when
the database falls behind the fetcher simply stops claiming. A batch that fails on a
broken connection is kept and written again after reconnecting: the statement's guard
(same attempt, still running, still ours) makes a repeated write harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from pgjobs.queries import Queries
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.jobs import Outcome

log = logging.getLogger("pgjobs.worker")

MAX_BATCH = 1000


class Completer:
    """Collects outcomes from executor threads and writes them in batches."""

    def __init__(
        self,
        connection: ResilientConnection,
        queries: Queries,
        worker_id: str,
        *,
        on_written: Callable[[list[Outcome], set[int]], None] | None = None,
    ) -> None:
        self.connection = connection
        self.queries = queries
        self.worker_id = worker_id
        self.on_written = on_written
        self.backlog: queue.Queue[tuple[Outcome, threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._pending: set[int] = set()
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="pgjobs-completer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, outcome: Outcome) -> threading.Event:
        """Queue an outcome; the returned event is set once its batch was written or given up."""
        written = threading.Event()
        with self._pending_lock:
            self._pending.add(outcome.job_id)
        self.backlog.put((outcome, written))
        return written

    def pending_ids(self) -> list[int]:
        """Jobs whose outcome is queued or being written.

        They are still `running` in the table, so the heartbeat must keep them alive:
        otherwise, after an outage longer than `rescue_after`, a job that finished during
        it would be rescued and run again before its outcome could be written.
        """
        with self._pending_lock:
            return list(self._pending)

    def write(self, batch: list[Outcome]) -> set[int]:
        """Write one batch now; returns the ids whose outcome was applied."""

        params = {
            "ids": [o.job_id for o in batch],
            "attempts": [o.attempt for o in batch],
            "states": [o.state for o in batch],
            "delays": [o.delay for o in batch],
            "errors": [o.error_json for o in batch],
            "attempts_deltas": [o.attempts_delta for o in batch],
            "max_attempts_deltas": [o.max_attempts_delta for o in batch],
            "worker_id": self.worker_id,
        }
        rows = self.connection.run(
            lambda conn: conn.execute(self.queries.record_outcomes, params).fetchall(),
            give_up=self._abandon,
        )
        return {row[0] for row in rows}

    def _next_batch(self) -> list[tuple[Outcome, threading.Event]]:
        try:
            batch = [self.backlog.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self.backlog.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not (self._stop.is_set() and self.backlog.empty()):
            entries = self._next_batch()
            if not entries:
                continue
            batch = [outcome for outcome, _ in entries]
            try:
                applied = self.write(batch)
            except Exception:
                log.exception(
                    "could not write outcomes; their jobs will be rescued",
                    extra={"count": len(batch)},
                )
                continue
            finally:
                with self._pending_lock:
                    self._pending.difference_update(o.job_id for o in batch)
                for _, written in entries:
                    written.set()
            dropped = {o.job_id for o in batch} - applied
            if dropped:
                log.info(
                    "outcomes dropped: jobs were cancelled or rescued meanwhile",
                    extra={"job_ids": sorted(dropped)},
                )
            if self.on_written is not None:
                self.on_written(batch, applied)

    def stop(self, timeout: float) -> bool:
        """Write what is queued, then stop; True when everything was written in time."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()  # stop retrying a dead database; rescue covers the rest
            self._thread.join(1.0)
            return False
        return True
