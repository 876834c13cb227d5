"""Fixtures for tests that run `pgjobs work` processes, and for tests of `pgjobs.testing`;
`tests/conftest.py` registers them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgjobs import App
from pgjobs.testing import Jobs
from tests.helpers.rows import create_runs_table
from tests.helpers.workers import WORKER_APP, StartWorker, WorkerProcess


@pytest.fixture
def runs_table(observer: psycopg.Connection[Any], schema: str) -> str:
    """Create `<schema>.runs`, where the test App's tasks record their runs; the schema."""
    create_runs_table(observer, schema)
    return schema


@pytest.fixture
def start_worker(database_url: str, schema: str) -> Iterator[StartWorker]:
    """Start `pgjobs work` processes on the test's schema: `start_worker(*args)`.

    `start_worker("--concurrency", "2")` returns a started `WorkerProcess`, by default
    waited until ready (`ready=False` returns at once; `app=` serves another App). At
    teardown every worker still running is killed and its logs are printed, which pytest
    shows for a failed test.
    """
    workers: list[WorkerProcess] = []

    def start(*args: str, ready: bool = True, app: str = WORKER_APP) -> WorkerProcess:
        worker = WorkerProcess(database_url, schema, *args, app=app)
        workers.append(worker)
        worker.start()
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.close()
        print(f"--- {worker.describe()}")
        worker.remove_log()


@pytest.fixture
def test_conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The test's connection, in a transaction rolled back at the end."""
    with psycopg.connect(database_url) as connection:
        yield connection
        connection.rollback()


@pytest.fixture
def helper(app: App, test_conn: psycopg.Connection[Any]) -> Iterator[Jobs]:
    """`pgjobs.testing.Jobs` on the test's connection."""
    with Jobs(app, test_conn) as jobs:
        yield jobs
