"""Retention: deletes finished jobs once they are past their state's retention.

Without it the jobs table grows forever (`pgjobs prune` by hand or from cron was the only
way). It is maintenance: only the leader runs it (`worker/maintenance.py`), once a
minute. A pass deletes in batches of `PRUNE_BATCH_SIZE` rows, each its own short
statement (the ones `pgjobs prune` uses: plain jobs, then workflows' steps, which stay
until their whole workflow has finished) on the maintenance connection, so the other
maintenance services wait for one batch at most, and it stops between batches when
maintenance stops. A session advisory lock around the pass stays as a guard for the beat
in which two workers may both think they lead; it goes with the connection if the worker
dies mid-pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any, TypeVar

import psycopg

from pgjobs.admin import PRUNE_BATCH_SIZE
from pgjobs.data.maintenance import PRUNE_START, MaintenanceStatements, PruneCursor
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
    """Deletes finished jobs past `policy` every `interval` seconds; idle when None."""

    def __init__(
        self,
        connection: Connections,
        statements: MaintenanceStatements,
        policy: RetentionPolicy | None,
        *,
        interval: float = INTERVAL,
        batch_size: int = PRUNE_BATCH_SIZE,
    ) -> None:
        super().__init__("retention", interval, connection, statements)
        self.policy = policy
        self.batch_size = batch_size

    def run_once(self) -> dict[str, int] | None:
        """One pass: {state: jobs deleted}, or None when another worker holds the turn."""
        if self.policy is None:
            return {}
        if not self._run(lambda conn: self.statements.try_maintenance_lock(conn, LOCK_NAME)):
            return None
        try:
            deleted = {
                state: self._delete(state, seconds) for state, seconds in self.policy.by_state()
            }
        finally:
            # On a connection that broke meanwhile the lock went with the session.
            with contextlib.suppress(*CONNECTION_ERRORS):
                self._run(lambda conn: self.statements.release_maintenance_lock(conn, LOCK_NAME))
        if any(deleted.values()):
            log.info(
                "deleted finished jobs past their retention",
                extra={f"{state}_deleted": count for state, count in deleted.items()},
            )
        return deleted

    def _delete(self, state: str, seconds: float) -> int:
        deleted = 0
        cursor: PruneCursor | None = PRUNE_START
        while cursor is not None and not self.stopping:
            batch, cursor = self._run(
                partial(
                    self.statements.prune_next,
                    states=[state],
                    older_than_seconds=seconds,
                    batch_size=self.batch_size,
                    cursor=cursor,
                )
            )
            deleted += batch
        return deleted

    def _run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        return self.connection.run(operation, attempts=1)
