"""`App.result`'s statements: how the jobs someone waits for stand, and the LISTEN on the
channel that says some may have finished.

The worker notifies the results channel (`SchemaSQL.results_channel`, empty payload)
once per statement that finishes jobs someone may wait for; the waiter (pgjobs/results.py)
then reads every job it waits for in one statement, FINISHED_JOBS, and polls with it as
a backstop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from psycopg import sql as psql

from pgjobs.data.sql import SchemaSQL, int_array
from pgjobs.data.steps import Plan, Statement

# One row per job that exists and is visible to this transaction (an id with no row was
# never committed, or was pruned). Only a finished job's stored result and last error are
# read: an unfinished one costs its id and state. The primary key serves the lookup.
FINISHED_JOBS = """
SELECT id, state,
       CASE WHEN state = 'completed' THEN result END,
       CASE WHEN state IN ('failed', 'cancelled') THEN errors -> -1 ->> 'error' END,
       CASE WHEN state = 'failed' THEN errors -> -1 ->> 'traceback' END
FROM {jobs}
WHERE id = ANY(%(ids)s::bigint[])
"""

FINISHED_STATES = frozenset({"completed", "failed", "cancelled"})


class Ending(NamedTuple):
    """How a finished job ended: its state, its stored result (completed) and its last
    error and traceback (failed; the error alone for cancelled)."""

    state: str
    result: Any
    error: str | None
    traceback: str | None


class Standing(NamedTuple):
    """The jobs asked about: those finished, by id, and the ids of those still to run
    (waiting, blocked or running). An id in neither cannot be seen."""

    finished: dict[int, Ending]
    unfinished: set[int]


def finished_jobs(sql: SchemaSQL, ids: Sequence[int]) -> Plan[Standing]:
    """Which of `ids` have finished, and how; which have not (one statement)."""
    found = yield Statement(sql.render(FINISHED_JOBS), {"ids": int_array(sorted(set(ids)))})
    standing = Standing({}, set())
    for job_id, state, result, error, traceback in found:
        if state in FINISHED_STATES:
            standing.finished[job_id] = Ending(state, result, error, traceback)
        else:
            standing.unfinished.add(job_id)
    return standing


def listen_statement(sql: SchemaSQL) -> Statement:
    """LISTEN on the schema's results channel (on an autocommit connection)."""
    listen = psql.SQL("LISTEN {}").format(psql.Identifier(sql.results_channel))
    return Statement(psql.SQL(listen.as_string()))
