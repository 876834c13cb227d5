"""Keeping the history of finished jobs apart: partitions ahead, old ones dropped whole.

Finished jobs live in `jobs_history`, one partition per final state and UTC day
(migration 0012). Retention (the workers' duty, and `pgjobs prune`) drops a partition
once its whole day is past the state's retention, so removing a day of history deletes
no row and leaves no dead tuple: a finished job stays between its retention and one day
more. Each step runs on an autocommit connection: a detach runs CONCURRENTLY, which
PostgreSQL allows only outside a transaction block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from pgjobs.data.history import HistoryStatements
from pgjobs.types import FINISHED_STATES

log = logging.getLogger("pgjobs.history")

# Partitions are made for today and this many days more.
DAYS_AHEAD = 2
MOVE_BATCH_SIZE = 10_000


def prepare(conn: Any, statements: HistoryStatements, *, completed_only: bool = False) -> None:
    """Make the partitions of every final state for today and the days ahead; with
    `completed_only`, only those that the workers' completions need today and tomorrow
    (the others are made on demand as jobs fail or are cancelled, and ahead by the
    workers' retention)."""
    if completed_only:
        statements.ensure_partitions(conn, ["completed"], days_ahead=1)
        return
    states = [state.value for state in FINISHED_STATES]
    statements.ensure_partitions(conn, states, days_ahead=DAYS_AHEAD)


def move_finished(
    conn: Any,
    statements: HistoryStatements,
    *,
    batch_size: int = MOVE_BATCH_SIZE,
    max_batches: int | None = None,
    stopping: Callable[[], bool] = lambda: False,
    progress: Callable[[int], None] = lambda moved: None,
) -> int:
    """Move the finished rows left in jobs_live into the history, `batch_size` per
    transaction, until none is left (or `max_batches` ran, or `stopping()`); how many
    moved."""
    moved = 0
    batches = 0
    while not stopping() and (max_batches is None or batches < max_batches):
        batches += 1
        batch = statements.move_finished(conn, batch_size=batch_size)
        moved += batch
        if batch:
            progress(moved)
        if batch < batch_size:
            break
    return moved


def drop_expired(
    conn: Any,
    statements: HistoryStatements,
    retention: Mapping[str, float],
    *,
    now: datetime | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """Drop the partitions of each state in `retention` ({state: seconds}) whose day
    ended longer ago than that; {state: jobs dropped}. A partition holding a step that a
    workflow with unfinished steps still needs is kept (and logged) until it no longer
    does."""
    now = now or datetime.now(timezone.utc)
    dropped = dict.fromkeys(retention, 0)
    for partition in statements.partitions(conn):
        seconds = retention.get(partition.state)
        if seconds is None or stopping():
            continue
        if partition.ends_at + timedelta(seconds=seconds) > now:
            continue
        if statements.holds_needed_steps(conn, partition):
            log.info(
                "kept a history partition past its retention: it holds steps of "
                "unfinished workflows",
                extra={"partition": partition.name},
            )
            continue
        dropped[partition.state] += statements.drop_partition(conn, partition)
    return dropped
