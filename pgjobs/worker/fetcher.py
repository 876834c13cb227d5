"""The fetcher: claims as many jobs as there are free threads, in one statement.

It claims when something suggests there is work: a NOTIFY, a freed slot after a claim
that came back full, or the slow poll that finds delayed jobs whose time has come and
covers missed notifications. A NOTIFY storm costs nothing while every thread is busy,
because nothing is claimed without a free slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from pgjobs.queries import Queries
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.jobs import ClaimedJob
from pgjobs.worker.queues import QueueSpec, allocate

log = logging.getLogger("pgjobs.worker")


class Fetcher:
    """Claims jobs for the executor pool."""

    def __init__(
        self,
        connection: ResilientConnection,
        queries: Queries,
        pool: ExecutorPool,
        queues: QueueSpec,
        worker_id: str,
        *,
        poll_interval: float,
        random: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.queries = queries
        self.pool = pool
        self.queues = queues
        self.worker_id = worker_id
        self.poll_interval = poll_interval
        self.random = random
        self.clock = clock
        self.job_available = threading.Event()  # set by the listener
        self._next_poll = clock()
        self._poll_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgjobs-fetcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify_job_available(self) -> None:
        """Called by the listener for a NOTIFY on a wanted queue."""
        self.job_available.set()
        self._wake.set()

    def notify_slot_freed(self) -> None:
        """Called by the executor pool when a thread becomes free."""
        self._wake.set()

    def poll_soon(self, delay: float) -> None:
        """Poll within `delay` seconds: a job was retried sooner than the next poll."""
        with self._poll_lock:
            self._next_poll = min(self._next_poll, self.clock() + delay)
        self._wake.set()

    def _poll_due(self, now: float) -> bool:
        with self._poll_lock:
            if now < self._next_poll:
                return False
            self._next_poll = now + self.poll_interval
            return True

    def _seconds_to_poll(self, now: float) -> float:
        with self._poll_lock:
            return max(self._next_poll - now, 0.0)

    def stop(self) -> None:
        """Stop claiming at once (a claim in flight still completes and is run)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)

    def claim(self, limit: int) -> list[ClaimedJob]:
        """Claim up to `limit` jobs, sharing them between weighted queues."""
        if self.queues.weights is None:
            return self._claim_statement(limit, None)
        claimed: list[ClaimedJob] = []
        shortfall = 0
        for queue, share in allocate(self.queues.weights, limit, self.random):
            want = share + shortfall
            if want == 0:
                continue
            got = self._claim_statement(want, queue)
            claimed.extend(got)
            shortfall = want - len(got)
        return claimed

    def _claim_statement(self, limit: int, queue: str | None) -> list[ClaimedJob]:
        query = self.queries.claim_any_queue if queue is None else self.queries.claim_from_queue
        params = {"limit": limit, "worker_id": self.worker_id, "queue": queue}
        # One quick retry covers a connection that went stale while idle. Retrying a claim
        # is safe: if the first one committed unseen, its jobs are never heart-beaten and
        # the rescuer returns them.
        rows = self.connection.run(lambda conn: conn.execute(query, params).fetchall(), attempts=2)
        return [ClaimedJob.from_row(row) for row in rows]

    def _run(self) -> None:
        maybe_more = True
        while not self._stop.is_set():
            free = self.pool.free_slots()
            now = self.clock()
            woken = self.job_available.is_set()
            if free > 0 and (self._poll_due(now) or maybe_more or woken):
                self.job_available.clear()
                try:
                    jobs = self.claim(free)
                except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                    log.warning("claim failed, retrying", extra={"error": str(error).strip()})
                    maybe_more = True
                    self._stop.wait(min(self.poll_interval, 1.0))
                    continue
                except Exception:
                    # E.g. a revoked privilege: keep trying at the poll pace rather than
                    # let the thread die and the worker sit idle without a word.
                    log.exception("claim failed unexpectedly, retrying")
                    self._stop.wait(self.poll_interval)
                    continue
                for job in jobs:
                    self.pool.submit(job)
                maybe_more = len(jobs) == free
                continue
            self._wake.wait(self._seconds_to_poll(now) if free > 0 else self.poll_interval)
            self._wake.clear()
