"""The history of finished jobs: its partitions, and rows moved into it.

Finished jobs live in `jobs_history`, one partition per final state and UTC day
(migration 0012). Partitions are made ahead of need (`ensure_partitions`), and retention
removes a whole partition once its day is past the state's retention: detached
CONCURRENTLY (the queue's tables are never locked against claims or completions), then
dropped. Finished rows still in `jobs_live` (history from before 0012, steps inserted
already cancelled) move over in batches (`move_finished`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

from psycopg import sql as psql

from pgjobs.data.connector import rows
from pgjobs.data.group import StatementGroup
from pgjobs.data.maintenance import DELETE_EMPTY_WORKFLOWS
from pgjobs.data.sql import fill
from pgjobs.data.steps import Statement

# The columns of a job in table order, the same in `jobs_live` and `jobs_history`
# (pgjobs.schema defines them; a test holds the two lists together).
JOB_COLUMNS = (
    "id",
    "queue",
    "task",
    "payload",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "errors",
    "worker_id",
    "unique_key",
    "scheduled_at",
    "began_at",
    "result",
    "workflow_id",
    "step",
    "run_if",
    "depends_on",
    "dependents",
    "waiting_for",
    "limit_buckets",
    "meta",
)


def moved_row(source: str, **changed: str) -> str:
    """The select list that inserts a row of `source` (a CTE of deleted rows) into the
    other table, with `changed` columns given new values (SQL expressions)."""
    unknown = set(changed) - set(JOB_COLUMNS)
    if unknown:
        raise ValueError(f"no such job columns: {sorted(unknown)}")
    return ", ".join(changed.get(column, f"{source}.{column}") for column in JOB_COLUMNS)


PARTITION_NAME = re.compile(r"^jobs_history_(completed|failed|cancelled)_(\d{8})$")

# The partitions of the history, and whether an interrupted retention pass left a
# detach pending (DETACH ... CONCURRENTLY happens in two transactions).
PARTITIONS = """
SELECT c.relname, i.inhdetachpending
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass(%(history)s)
ORDER BY c.relname
"""

# Whether this session's role owns the history (may detach CONCURRENTLY itself).
OWNS_HISTORY = """
SELECT pg_has_role(c.relowner, 'MEMBER') FROM pg_class AS c
WHERE c.oid = to_regclass(%(history)s)
"""
# A role that does not own it has the owner's function detach and drop (migration 0012).
DROP_AS_OWNER = "SELECT {history_drop}(%(name)s)"

# Partitions for the days ahead, so a completion never has to make one.
ENSURE_PARTITIONS = """
SELECT count({history_partition}(s.state, now() + make_interval(days => d.day)))
FROM unnest(%(states)s::text[]) AS s(state)
CROSS JOIN generate_series(0, %(days_ahead)s) AS d(day)
"""

# One batch of finished rows left in jobs_live moved into the history (migration 0012).
MOVE_FINISHED = "SELECT {move_finished_batch}(%(batch_size)s)"

# A partition's rows are read through `jobs_history` (the roles that may read the
# history have no grant on its partitions), by its state and day, which PostgreSQL
# prunes to that one partition.
IN_PARTITION = """
    SELECT * FROM {history}
    WHERE state = %(state)s AND finished_at >= %(starts_at)s AND finished_at < %(ends_at)s
"""
# A partition that still holds a step of a workflow with unfinished steps is kept: a
# step released later reads its dependencies' results, and a retried one waits for them.
HOLDS_NEEDED_STEPS = """
SELECT EXISTS (
    SELECT FROM ({in_partition}) AS h
    WHERE h.workflow_id IS NOT NULL
      AND EXISTS (SELECT FROM {live} AS s
                  WHERE s.workflow_id = h.workflow_id
                    AND s.state IN ('available', 'running', 'blocked'))
)
"""
PARTITION_ROWS = """
SELECT (SELECT count(*) FROM ({in_partition}) AS h),
       ARRAY(SELECT DISTINCT h.workflow_id FROM ({in_partition}) AS h
             WHERE h.workflow_id IS NOT NULL)
"""
HOLDS_NEEDED_STEPS = fill(HOLDS_NEEDED_STEPS, in_partition=IN_PARTITION)
PARTITION_ROWS = fill(PARTITION_ROWS, in_partition=IN_PARTITION)


class Partition(NamedTuple):
    """One partition of the history: its table, final state, UTC day, and whether an
    interrupted detach left it pending."""

    name: str
    state: str
    day: date
    detach_pending: bool

    @property
    def ends_at(self) -> datetime:
        """When its day is over: no job finishing later lands in it."""
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=timezone.utc)
        return start + timedelta(days=1)


class HistoryStatements(StatementGroup):
    """The history's statements for one schema, on a given connection.

    The history's owner detaches CONCURRENTLY, which PostgreSQL refuses inside a
    transaction block: `drop_partition` needs an autocommit connection.
    """

    def partitions(self, conn: Any) -> list[Partition]:
        """The history's partitions, oldest day first within each state."""
        found = self._rows(conn, PARTITIONS, {"history": self._qualified("jobs_history")})
        partitions = []
        for name, pending in found:
            match = PARTITION_NAME.match(name)
            if match:
                day = datetime.strptime(match[2], "%Y%m%d").date()
                partitions.append(Partition(name, match[1], day, bool(pending)))
        return sorted(partitions, key=lambda p: (p.state, p.day))

    def ensure_partitions(self, conn: Any, states: Sequence[str], *, days_ahead: int) -> None:
        """Make the partitions of `states` for today and `days_ahead` more days."""
        params = {"states": list(states), "days_ahead": days_ahead}
        self._rows(conn, ENSURE_PARTITIONS, params)

    def move_finished(self, conn: Any, *, batch_size: int) -> int:
        """Move up to `batch_size` finished rows from jobs_live into the history."""
        [(moved,)] = self._rows(conn, MOVE_FINISHED, {"batch_size": batch_size})
        return int(moved)

    def holds_needed_steps(self, conn: Any, partition: Partition) -> bool:
        """Whether `partition` holds a step that a workflow with unfinished steps needs."""
        [(needed,)] = self._rows(conn, HOLDS_NEEDED_STEPS, _bounds(partition))
        return bool(needed)

    def drop_partition(self, conn: Any, partition: Partition) -> int:
        """Detach `partition` concurrently and drop it; how many jobs it held. The
        workflows left without a step go too."""
        [(count, workflows)] = self._rows(conn, PARTITION_ROWS, _bounds(partition))
        [(owner,)] = self._rows(conn, OWNS_HISTORY, {"history": self._qualified("jobs_history")})
        if owner:
            table = psql.Identifier(self.schema, partition.name)
            history = psql.Identifier(self.schema, "jobs_history")
            mode = psql.SQL("FINALIZE" if partition.detach_pending else "CONCURRENTLY")
            detach = psql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(history, table, mode)
            rows(conn, self.schema, Statement(_plain(detach)))
            rows(conn, self.schema, Statement(_plain(psql.SQL("DROP TABLE {}").format(table))))
        else:
            self._rows(conn, DROP_AS_OWNER, {"name": partition.name})
        if workflows:
            self._rows(conn, DELETE_EMPTY_WORKFLOWS, {"ids": workflows})
        return int(count)

    def _qualified(self, name: str) -> str:
        return psql.Identifier(self.schema, name).as_string()


def _bounds(partition: Partition) -> dict[str, Any]:
    """The state and day of `partition`, as IN_PARTITION's parameters."""
    ends_at = partition.ends_at
    return {"state": partition.state, "starts_at": ends_at - timedelta(days=1), "ends_at": ends_at}


def _plain(composed: psql.Composed) -> psql.SQL:
    """A statement with its identifiers in, as the plain SQL that `Statement` holds."""
    return psql.SQL(composed.as_string())
