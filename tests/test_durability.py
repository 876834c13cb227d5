"""Claims and outcomes survive a server crash: no job runs twice without saying why.

The session's test cluster trades durability for speed (fsync off), and the outage tests
stop it with `-m fast`, which flushes first. Here a cluster of its own runs with fsync
and synchronous commit on, as in production, and is stopped with `-m immediate` (a
crash: nothing is flushed, the next start replays the WAL) in the middle of a drain.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.embedded import LocalCluster
from pgjobs.migrate import upgrade
from tests.helpers import WorkerProcess, wait_until
from tests.helpers.outages import query

pytestmark = pytest.mark.slow

SCHEMA = "durability"
JOBS = 20000


@pytest.fixture
def durable_cluster() -> Iterator[LocalCluster]:
    """A cluster with the server's own durability (fsync and synchronous_commit on)."""
    root = Path(tempfile.mkdtemp(prefix="pgjobs-durable-"))
    cluster = LocalCluster(root / "pgdata")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def runs_by_job(path: Path) -> Counter[int]:
    """How many times each job's task body ran, from the App's file."""
    if not path.exists():
        return Counter()
    return Counter(int(line.split()[0]) for line in path.read_text().splitlines() if line)


def test_a_server_crash_mid_drain_loses_no_claim_and_no_outcome(
    durable_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = durable_cluster.ensure_running()
    [(fsync, commit)] = query(
        url, "SELECT current_setting('fsync'), current_setting('synchronous_commit')"
    )
    assert (fsync, commit) == ("on", "on")
    upgrade(url, SCHEMA)
    app = App(url, schema=SCHEMA)
    try:
        app.enqueue_many(None, [("touch", {})] * JOBS)
    finally:
        app.close()
    runs_file = tmp_path / "runs"
    monkeypatch.setenv("PGJOBS_RUNS_FILE", str(runs_file))
    # given: a worker part-way through the drain (durable claims: the default)
    with WorkerProcess(
        url, SCHEMA, "--concurrency", "10", "--rescue-after", "3", app="tests.crash_app:app"
    ) as worker:
        worker.start().wait_ready()
        wait_until(lambda: sum(runs_by_job(runs_file).values()) >= JOBS // 4, timeout=30)
        # when: the server crashes, and comes back after replaying its WAL
        durable_cluster.pg_ctl("stop", "-m", "immediate")
        ran_before_crash = sum(runs_by_job(runs_file).values())
        durable_cluster.ensure_running()
        # then: every job completes
        completed = sql.SQL("SELECT count(*) FROM {} WHERE state = 'completed'").format(
            sql.Identifier(SCHEMA, "jobs")
        )
        wait_until(lambda: query(url, completed)[0][0] == JOBS, timeout=60, message=worker.describe)
        assert worker.running(), worker.describe()
    assert ran_before_crash < JOBS, "the drain ended before the crash"
    # and: a job that ran more than once says why in its errors
    ran = runs_by_job(runs_file)
    assert set(ran) == set(range(1, JOBS + 1))
    twice = sorted(job_id for job_id, runs in ran.items() if runs > 1)
    rows = query(
        url,
        sql.SQL("SELECT id, jsonb_array_length(errors) FROM {} WHERE id = ANY(%s)").format(
            sql.Identifier(SCHEMA, "jobs")
        ),
        [twice],
    )
    unexplained = [job_id for job_id, errors in rows if errors == 0]
    assert unexplained == [], f"{len(unexplained)} of {len(twice)} jobs ran twice unrecorded"
