"""Retention: drops finished jobs once they are past their state's retention.

Without it the history grows forever. It is maintenance: only the leader runs it
(`worker/maintenance.py`), once a minute. A pass makes the history's partitions for the
days ahead, moves the finished rows left in jobs_live into the history in batches of
`PRUNE_BATCH_SIZE` (each its own short statement), and drops whole partitions whose day
is past the state's retention (pgjobs/history.py): a job stays between its retention and
one day more, and removing it deletes no row. Steps of workflows with unfinished steps
keep their partition. It runs on the maintenance connection and stops between steps
when maintenance stops. A session advisory lock around the pass stays as a guard for the beat
in which two workers may both think they lead; it goes with the connection if the worker
dies mid-pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import psycopg

from pgjobs import history
from pgjobs.admin import PRUNE_BATCH_SIZE
from pgjobs.data.history import HistoryStatements
from pgjobs.data.maintenance import MaintenanceStatements
from pgjobs.errors import ConfigurationError
from pgjobs.types import FINISHED_STATES
from pgjobs.worker.connection import CONNECTION_ERRORS, Connections
from pgjobs.worker.service import StatementService

T = TypeVar("T")
log = logging.getLogger("pgjobs.worker")

DAY = 86400.0
# Seconds between passes: finished jobs a minute past their retention cost nothing.
INTERVAL = 60.0
LOCK_NAME = "retention"
# Batches of finished rows moved out of jobs_live per pass: the other maintenance on
# the leader's connection (rescue, periodic enqueue) waits for a pass, so a large old
# history moves over several passes (`pgjobs migrate` moves it all at once).
MOVE_BATCHES_PER_PASS = 10
OFF = "off"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long finished jobs stay, in seconds, per final state; None keeps them."""

    completed: float | None = DAY
    failed: float | None = 7 * DAY
    cancelled: float | None = DAY

    @classmethod
    def parse(cls, text: str, duration: Callable[[str], float]) -> RetentionPolicy | None:
        """`--retention`: "off", or `state=DURATION` pairs (others keep their default),
        where DURATION is read by `duration` or is "off" to keep that state's jobs."""
        if text.strip() == OFF:
            return None
        names = [state.value for state in FINISHED_STATES]
        changes: dict[str, float | None] = {}
        for part in text.split(","):
            state, sep, value = (piece.strip() for piece in part.partition("="))
            if not sep or state not in names:
                raise ConfigurationError(
                    f"--retention takes {OFF!r} or STATE=DURATION pairs with a state among "
                    f"{', '.join(names)}, e.g. failed=30d,completed=12h; got {part.strip()!r}"
                )
            changes[state] = None if value == OFF else duration(value)
        return replace(cls(), **changes)

    def by_state(self) -> list[tuple[str, float]]:
        """(state, seconds) of each state whose jobs are deleted."""
        return [
            (field.name, seconds)
            for field in fields(self)
            if (seconds := getattr(self, field.name)) is not None
        ]

    def describe(self) -> str:
        """For the worker's start-up line, e.g. "completed=86400s,failed=604800s,…"."""
        return ",".join(
            f"{field.name}={OFF if (value := getattr(self, field.name)) is None else f'{value:g}s'}"
            for field in fields(self)
        )


class Retention(StatementService[MaintenanceStatements]):
    """Keeps the history every `interval` seconds: makes its partitions ahead, moves
    finished rows left in jobs_live into it, and drops the partitions past `policy`
    (None keeps every finished job)."""

    def __init__(
        self,
        connection: Connections,
        statements: MaintenanceStatements,
        policy: RetentionPolicy | None,
        *,
        history: HistoryStatements,
        interval: float = INTERVAL,
        batch_size: int = PRUNE_BATCH_SIZE,
    ) -> None:
        super().__init__("retention", interval, connection, statements)
        self.policy = policy
        self.history = history
        self.batch_size = batch_size

    def run_once(self) -> dict[str, int] | None:
        """One pass: {state: jobs dropped}, or None when another worker holds the turn."""
        if not self._run(lambda conn: self.statements.try_maintenance_lock(conn, LOCK_NAME)):
            return None
        try:
            self._run(lambda conn: history.prepare(conn, self.history))
            moved = self._run(
                lambda conn: history.move_finished(
                    conn,
                    self.history,
                    batch_size=self.batch_size,
                    max_batches=MOVE_BATCHES_PER_PASS,
                    stopping=lambda: self.stopping,
                )
            )
            retention = dict(self.policy.by_state()) if self.policy else {}
            deleted = self._run(
                lambda conn: history.drop_expired(
                    conn, self.history, retention, stopping=lambda: self.stopping
                )
            )
        finally:
            # On a connection that broke meanwhile the lock went with the session.
            with contextlib.suppress(*CONNECTION_ERRORS):
                self._run(lambda conn: self.statements.release_maintenance_lock(conn, LOCK_NAME))
        if moved:
            log.info("moved finished jobs into the history", extra={"moved": moved})
        if any(deleted.values()):
            log.info(
                "dropped finished jobs past their retention",
                extra={f"{state}_deleted": count for state, count in deleted.items()},
            )
        return deleted

    def _run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        return self.connection.run(operation, attempts=1)
