"""Outages and fleets for the reliability tests.

- `query`: one statement on a fresh connection, retried while the server is away, for
  tests that restart PostgreSQL or terminate every backend (a long-lived connection
  would be among the casualties).
- `state_counts`, `run_counts`: how many jobs are in each state, how often each ran.
- `lost_worker_errors`, `unaccounted_attempts`: rescues, and runs no attempt explains.
- `terminate_client_backends`: the `pg_terminate_backend` storm.
- `Fleet`: worker processes that a test kills and replaces, as a supervisor would.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from tests.helpers.waiting import wait_until
from tests.helpers.workers import WorkerProcess


def query(
    database_url: str, statement: str | sql.Composed, params: Any = None, *, retry_for: float = 30.0
) -> list[tuple[Any, ...]]:
    """Run one statement on a new connection; retry connection failures for `retry_for` s."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
                cursor = conn.execute(statement, params)
                return cursor.fetchall() if cursor.description else []
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def state_counts(database_url: str, schema: str) -> Counter[str]:
    """Number of jobs in each state."""
    rows = query(
        database_url,
        sql.SQL("SELECT state, count(*) FROM {} GROUP BY state").format(
            sql.Identifier(schema, "jobs")
        ),
    )
    return Counter({state: count for state, count in rows})


def run_counts(database_url: str, schema: str, label: str | None = None) -> Counter[int]:
    """How many runs each job recorded in `<schema>.runs` (only those with `label`)."""
    rows = query(
        database_url,
        sql.SQL(
            "SELECT job_id, count(*) FROM {} WHERE %(label)s::text IS NULL OR label = %(label)s"
            " GROUP BY job_id"
        ).format(sql.Identifier(schema, "runs")),
        {"label": label},
    )
    return Counter({job_id: count for job_id, count in rows})


def lost_worker_errors(database_url: str, schema: str) -> dict[int, list[str]]:
    """For each job with "worker lost" entries in `errors`, the lost workers' ids."""
    rows = query(
        database_url,
        sql.SQL(
            "SELECT j.id, array_agg(e ->> 'worker') FROM {} AS j,"
            " jsonb_array_elements(j.errors) AS e"
            " WHERE e ->> 'error' LIKE 'worker lost: %%' GROUP BY j.id"
        ).format(sql.Identifier(schema, "jobs")),
    )
    return {job_id: list(workers) for job_id, workers in rows}


def unaccounted_attempts(database_url: str, schema: str) -> list[int]:
    """Finished jobs that ran more often than their attempts say, or whose failed attempts
    (all but a final success) do not each have an `errors` entry: a silent re-run or a
    lost outcome."""
    rows = query(
        database_url,
        sql.SQL(
            "SELECT j.id FROM {jobs} AS j LEFT JOIN ("
            " SELECT job_id, count(*) AS started FROM {runs} WHERE label = 'started'"
            " GROUP BY job_id) AS r ON r.job_id = j.id"
            " WHERE j.state IN ('completed', 'failed')"
            " AND (coalesce(r.started, 0) > j.attempts"
            " OR jsonb_array_length(j.errors) <> j.attempts - (j.state = 'completed')::int)"
            " ORDER BY j.id"
        ).format(jobs=sql.Identifier(schema, "jobs"), runs=sql.Identifier(schema, "runs")),
    )
    return [job_id for (job_id,) in rows]


def terminate_client_backends(database_url: str) -> tuple[int, datetime]:
    """Terminate every other client backend of the database.

    Returns how many there were, and the server's clock right after the signals went out.
    """
    [(count, at)] = query(
        database_url,
        "SELECT terminated, clock_timestamp() FROM ("
        " SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS terminated"
        " FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend') AS done",
    )
    return int(count), at


def worker_pid(worker_id: str) -> int:
    """The process id inside a worker id (`host:pid:random`)."""
    return int(worker_id.rsplit(":", 2)[1])


def serving(worker: WorkerProcess) -> bool:
    """Whether the worker got past start-up (its signal handlers are installed)."""
    return "worker started" in worker.logs()


class Fleet:
    """Worker processes kept at `size`: a dead one is replaced, as systemd would."""

    def __init__(self, start: Callable[[], WorkerProcess], size: int) -> None:
        self.start = start
        self.workers = [start() for _ in range(size)]
        self.deaths: list[tuple[int, int]] = []  # (pid, exit status) of every dead worker

    def replace_dead(self) -> int:
        """Start a new worker for each one that exited; returns how many were replaced."""
        replaced = 0
        for index, worker in enumerate(self.workers):
            if not worker.running():
                self.deaths.append((worker.pid, worker.wait_exit()))
                self.workers[index] = self.start()
                replaced += 1
        return replaced

    def kill_one(self, rng: random.Random) -> int:
        """SIGKILL a random running worker and replace it; returns the killed pid.

        Workers that have started serving are preferred: killing one still importing
        its App would test nothing.
        """
        running = [w for w in self.workers if w.running()]
        victim = rng.choice([w for w in running if serving(w)] or running)
        victim.send(signal.SIGKILL)
        victim.wait_exit()
        self.replace_dead()
        return victim.pid

    def stop(self) -> list[int]:
        """SIGTERM every worker once it serves; their exit statuses.

        A replacement still importing its App would die of the signal's default action
        before it installs its handler, which says nothing about pgjobs.
        """
        for worker in self.workers:
            wait_until(partial(serving, worker), 20, message=worker.describe)
            worker.send(signal.SIGTERM)
        return [worker.wait_exit(30) for worker in self.workers]
