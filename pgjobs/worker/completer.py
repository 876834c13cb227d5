"""The completer: the one place that writes attempts' outcomes, in batches.

Executor threads hand outcomes over and move on to their next job; the completer writes
whatever has piled up in a single statement, at most `FLUSH_DELAY` after an outcome
arrived (or at once when `BATCH_SIZE` are waiting). Under load that turns thousands of
small transactions into a few large ones; under no load an outcome waits a few
milliseconds. Unwritten outcomes are bounded (`max_pending`): when the database falls
behind, `submit` blocks, executor threads stop taking jobs, and the fetcher stops
claiming. That bound is part of what a worker may hold (see `ClaimBuffer`).

A batch that fails on a broken connection is kept and written again after reconnecting:
the statement's guard (same attempt, still running, still ours) makes a repeated write
harmless. A batch the database refuses for any other reason is split until the outcome
it cannot store is alone; that one is recorded as a failed attempt with the database's
error, so one bad outcome never costs the others theirs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import psycopg

from pgjobs.data.claims import ClaimStatements
from pgjobs.db import first_line
from pgjobs.types import Outcome
from pgjobs.worker.connection import Connections
from pgjobs.worker.events import EventBus, OutcomesWritten
from pgjobs.worker.outcomes import unstorable
from pgjobs.worker.service import StatementService, StopPhase

log = logging.getLogger("pgjobs.worker")

BATCH_SIZE = 500  # write at once when this many are waiting
MAX_BATCH = 1000  # rows in one statement at most
FLUSH_DELAY = 0.005  # seconds an outcome may wait for others to join its batch
DEFAULT_MAX_PENDING = 1000  # unwritten outcomes before executor threads wait


class Completer(StatementService[ClaimStatements]):
    """Collects outcomes from executor threads and writes them in batches."""

    stop_phase = StopPhase.OUTCOMES
    stop_timeout = 10.0  # generous: every outcome not written now costs a rescue later

    def __init__(
        self,
        connection: Connections,
        statements: ClaimStatements,
        worker_id: str,
        events: EventBus,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        flush_delay: float = FLUSH_DELAY,
        clock: Callable[[], float] = time.monotonic,
        urgent: Callable[[int], bool] = lambda job_id: False,
    ) -> None:
        super().__init__("completer", 0.1, connection, statements)
        self.worker_id = worker_id
        self.events = events
        self.max_pending = max_pending
        self.flush_delay = flush_delay
        self.clock = clock
        self.urgent = urgent  # jobs whose outcome is written at once (limited ones)
        self._queued: deque[tuple[float, Outcome, bool]] = deque()  # (queued at, _, urgent)
        self._pending: dict[int, int] = {}  # job id -> outcomes queued or being written
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._abandon = threading.Event()
        self._urgent = 0  # queued outcomes that release workflow steps (Outcome.releases)
        self._unwritten = 0  # outcomes given up on (database gone at shutdown)

    def submit(self, outcome: Outcome) -> None:
        """Queue an outcome for writing; blocks while `max_pending` are unwritten."""
        with self._changed:
            while len(self._pending) >= self.max_pending and not self._abandon.is_set():
                self._changed.wait(0.1)
            urgent = outcome.releases or self.urgent(outcome.job_id)
            self._queued.append((self.clock(), outcome, urgent))
            self._pending[outcome.job_id] = self._pending.get(outcome.job_id, 0) + 1
            first = len(self._queued) == 1
            full = len(self._queued) >= BATCH_SIZE
            self._urgent += urgent
        if first or full or urgent:
            self.wake()

    def pending_ids(self) -> list[int]:
        """Jobs whose outcome is queued or being written.

        They are still `running` in the table, so the heartbeat must keep them alive:
        otherwise, after an outage longer than `rescue_after`, a job that finished during
        it would be rescued and run again before its outcome could be written.
        """
        with self._lock:
            return list(self._pending)

    def pending(self) -> int:
        """How many outcomes are not written yet."""
        with self._lock:
            return len(self._pending)

    def next_wait(self) -> float:
        with self._lock:
            due_in = self._due_in()
        return self.interval if due_in is None else due_in

    def _due_in(self) -> float | None:
        """Seconds until the queued outcomes are due (0: now); None when none are queued.

        Due when stopping, when a batch is full, when it holds a workflow step's
        completion or a limited job's outcome (dependents wait for the one, a slot for
        the other: written at once, so that a chain of steps, or a limit's slots, pay no
        batching delay per job; under load the completer is busy writing and batches
        form all the same), or once the oldest waited `flush_delay`. A stored
        result alone waits like any outcome: a few milliseconds more for `App.result`
        buys whole batches when result-storing jobs stream through.
        """
        if not self._queued:
            return None
        if self.stopping or self._urgent or len(self._queued) >= BATCH_SIZE:
            return 0.0
        return max(0.0, self._queued[0][0] + self.flush_delay - self.clock())

    def run_once(self) -> int:
        """Write the outcomes that are due (all of them when stopping); how many."""
        batch = self._take_due()
        if not batch:
            return 0
        try:
            applied = self._write_isolating(batch)
        except Exception as error:
            # Only when the database stayed unreachable until we gave up at shutdown:
            # the jobs stay `running` and the rescuer returns them later.
            log.error(
                "could not write outcomes; their jobs will be rescued",
                extra={"count": len(batch), "error": first_line(error)},
            )
            self._unwritten += len(batch)
            applied = set()
        finally:
            self._forget(batch)
        dropped = {o.job_id for o in batch} - applied
        if dropped:
            log.info(
                "outcomes dropped: jobs were cancelled or rescued meanwhile",
                extra={"job_ids": sorted(dropped)},
            )
        self.events.emit(OutcomesWritten(batch, frozenset(applied)))
        return len(batch)

    def flush(self) -> None:
        """Write everything queued now, in this thread."""
        while self.run_once():
            pass

    def keep_running(self) -> bool:
        """Until stopped, and then until everything queued has been written."""
        if not self.stopping:
            return True
        with self._lock:
            return bool(self._queued)

    def stop(self, timeout: float) -> bool:
        """Write what is queued, then stop; True when everything was written in time."""
        self.request_stop()
        if not self.join(timeout):
            self._abandon.set()  # stop retrying a dead database; rescue covers the rest
            self.join(1.0)
        self.close()
        with self._lock:
            return not self._abandon.is_set() and not self._queued and not self._unwritten

    def _take_due(self) -> list[Outcome]:
        with self._lock:
            if self._due_in() != 0.0:
                return []
            count = min(len(self._queued), MAX_BATCH)
            taken = [self._queued.popleft() for _ in range(count)]
            self._urgent -= sum(urgent for _, _, urgent in taken)
            return [outcome for _, outcome, _ in taken]

    def _forget(self, batch: Sequence[Outcome]) -> None:
        with self._changed:
            for outcome in batch:
                left = self._pending.get(outcome.job_id, 0) - 1
                if left > 0:
                    self._pending[outcome.job_id] = left
                else:
                    self._pending.pop(outcome.job_id, None)
            self._changed.notify_all()

    def _write(self, batch: Sequence[Outcome]) -> set[int]:
        return self.connection.run(
            lambda conn: self.statements.record_outcomes(conn, batch, worker_id=self.worker_id),
            give_up=self._abandon,
        )

    def _write_isolating(self, batch: Sequence[Outcome]) -> set[int]:
        """Write `batch`; if the database refuses it, write what it can of it."""
        try:
            return self._write(batch)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # retried by the connection until given up
        except psycopg.Error as error:
            if len(batch) == 1:
                return self._write_unstorable(batch[0], error)
        middle = len(batch) // 2
        return self._write_isolating(batch[:middle]) | self._write_isolating(batch[middle:])

    def _write_unstorable(self, outcome: Outcome, error: psycopg.Error) -> set[int]:
        """Record the attempt as failed, saying why its own outcome could not be stored."""
        log.error(
            "outcome could not be stored; recording the attempt as failed",
            extra={"job_id": outcome.job_id, "error": first_line(error)},
        )
        return self._write([unstorable(outcome, first_line(error))])
