"""Reliability: real worker processes, real signals, a real PostgreSQL, nothing lost.

Each test prints its figures (jobs, kills, duplicates, recovery time) on one `FIGURES`
line; run with `-s` to read them. Workers run with `--rescue-after 2`, so they beat
every 0.5 s and a dead worker's jobs come back after 2 to 2.5 s.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgjobs import App
from pgjobs.embedded import LocalCluster
from pgjobs.migrate import upgrade
from tests.helpers import (
    Fleet,
    StartWorker,
    WorkerProcess,
    create_runs_table,
    job,
    lost_worker_errors,
    query,
    run_counts,
    runs,
    state_counts,
    terminate_client_backends,
    unaccounted_attempts,
    wait_until,
    worker_pid,
)

FAST_RESCUE = ("--rescue-after", "2", "--shutdown-timeout", "5")
POISON_APP = "tests.poison_app:app"


def figures(test: str, **values: Any) -> None:
    """Print a test's figures on one line, for the record."""
    print(f"\nFIGURES {test}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def enqueue_sleeps(app: App, count: int, seconds: float) -> None:
    app.enqueue_many(None, [("sleep", {"seconds": seconds})] * count)


@pytest.mark.slow
def test_job_of_a_sigkilled_worker_is_rescued_and_completed_by_another_worker(
    app: App, runs_table: str, observer: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    # given two workers, one of them in the middle of a job
    workers = [start_worker(*FAST_RESCUE, "--concurrency", "1") for _ in range(2)]
    job_id = app.enqueue(None, "sleep", {"seconds": 1.0})
    [first_run] = wait_until(lambda: runs(observer, runs_table), timeout=10)
    victim = next(w for w in workers if w.worker_id() == first_run["worker_id"])
    survivor = next(w for w in workers if w is not victim)

    # when that worker is killed with SIGKILL
    victim.send(signal.SIGKILL)
    killed_at = time.monotonic()
    assert victim.wait_exit() == -signal.SIGKILL

    # then the other worker rescues the job and completes it, counting the lost attempt
    wait_until(
        lambda: job(observer, runs_table, job_id)["state"] == "completed",
        timeout=15,
        message=survivor.describe,
    )
    recovered_in = time.monotonic() - killed_at
    row = job(observer, runs_table, job_id)
    assert row["attempts"] == 2
    [lost] = row["errors"]
    assert lost["attempt"] == 1
    assert lost["worker"] == victim.worker_id()
    assert lost["error"].startswith(f"worker lost: {victim.worker_id()} sent no heartbeat")
    assert [(r["attempt"], r["label"], r["worker_id"]) for r in runs(observer, runs_table)] == [
        (1, "started", victim.worker_id()),
        (2, "started", survivor.worker_id()),
        (2, "finished", survivor.worker_id()),
    ]
    assert "rescued job of a lost worker" in survivor.logs()
    figures("sigkill", kills=1, attempts=row["attempts"], kill_to_completed_s=f"{recovered_in:.2f}")


def stop_for_longer_than_rescue_after(cluster: LocalCluster) -> None:
    cluster.pg_ctl("stop", "-m", "fast")
    time.sleep(3.0)  # --rescue-after is 2
    cluster.ensure_running()


OUTAGES = {
    "restart": lambda cluster: cluster.pg_ctl("restart", "-m", "fast"),
    "down_longer_than_rescue_after": stop_for_longer_than_rescue_after,
}


@pytest.mark.slow
@pytest.mark.parametrize("outage", list(OUTAGES))
def test_every_job_completes_across_a_postgres_restart(
    outage: str,
    local_cluster: LocalCluster | None,
    database_url: str,
    app: App,
    runs_table: str,
    start_worker: StartWorker,
) -> None:
    if local_cluster is None:
        pytest.skip("restarts the server: needs the session's own local cluster, not a given URL")
    # given a worker part-way through 1,500 jobs
    total = 1500
    enqueue_sleeps(app, total, 0.01)
    worker = start_worker(*FAST_RESCUE, "--concurrency", "4")
    wait_until(lambda: state_counts(database_url, runs_table)["completed"] >= 300, timeout=30)

    # when PostgreSQL shuts down (fast: every session is ended) and comes back
    before = state_counts(database_url, runs_table)
    try:
        OUTAGES[outage](local_cluster)
    finally:
        local_cluster.ensure_running()  # later tests need the server, whatever happened

    # then the worker reconnects by itself and every job completes
    wait_until(
        lambda: state_counts(database_url, runs_table)["completed"] == total,
        timeout=60,
        message=worker.describe,
    )
    assert worker.running(), worker.describe()
    logs = worker.logs()
    assert "database connection lost, retrying" in logs
    assert "listener failed, retrying" in logs
    [(recovery,)] = query(
        database_url,
        sql.SQL(
            "SELECT extract(epoch FROM min(finished_at) - pg_postmaster_start_time())"
            " FROM {} WHERE finished_at > pg_postmaster_start_time()"
        ).format(sql.Identifier(runs_table, "jobs")),
    )
    # Jobs whose own statements the outage broke failed that attempt and were retried,
    # with an errors entry; no finished job was rescued and run again, even when the
    # outage outlasted --rescue-after, because the worker beats for unwritten outcomes.
    assert lost_worker_errors(database_url, runs_table) == {}
    assert unaccounted_attempts(database_url, runs_table) == []
    started = run_counts(database_url, runs_table, "started")
    assert worker.stop() == 0
    figures(
        f"pg-{outage}",
        jobs=total,
        running_at_outage=before["running"],
        completed_before=before["completed"],
        ran_twice=sum(1 for count in started.values() if count > 1),
        rescued=0,
        server_up_to_first_outcome_written_s=f"{float(recovery):.2f}",
    )


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """A database of this test's own, so a backend-killing spree hits nobody else."""
    name = f"pgjobs_test_{uuid.uuid4().hex[:10]}"
    query(database_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(database_url, dbname=name)
    query(database_url, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.slow
def test_worker_recovers_when_every_client_backend_is_terminated(own_database: str) -> None:
    # given a worker that learns about new jobs only by NOTIFY (its poll is 30 s away),
    # half-way through 400 jobs
    schema = "pgjobs"
    upgrade(own_database, schema)
    with psycopg.connect(own_database, autocommit=True) as conn:
        create_runs_table(conn, schema)
    total = 400
    app = App(own_database, schema=schema)
    with WorkerProcess(
        own_database, schema, *FAST_RESCUE, "--concurrency", "4", "--poll-interval", "30"
    ) as worker:
        worker.start().wait_ready()
        enqueue_sleeps(app, total, 0.02)
        wait_until(lambda: state_counts(own_database, schema)["completed"] >= 100, timeout=30)

        # when every client backend of the database is terminated, the worker's included
        terminated, terminated_at = terminate_client_backends(own_database)

        # then it reconnects, LISTENs again, finishes the jobs and runs new ones
        wait_until(
            lambda: state_counts(own_database, schema)["completed"] == total,
            timeout=60,
            message=worker.describe,
        )
        [(recovery,)] = query(
            own_database,
            "SELECT extract(epoch FROM min(finished_at) - %s) FROM pgjobs.jobs"
            " WHERE finished_at > %s",
            (terminated_at, terminated_at),
        )
        new_id = app.enqueue(None, "record", {"label": "after"})
        enqueued_at = time.monotonic()
        wait_until(
            lambda: (
                query(own_database, "SELECT state FROM pgjobs.jobs WHERE id = %s", (new_id,))
                == [("completed",)]
            ),
            timeout=10,
            message=worker.describe,
        )
        new_job_latency = time.monotonic() - enqueued_at
        assert worker.running(), worker.describe()
        assert "database connection lost, retrying" in worker.logs()
        started = run_counts(own_database, schema, "started")
        assert lost_worker_errors(own_database, schema) == {}
        assert unaccounted_attempts(own_database, schema) == []
        assert worker.stop() == 0
    app.close()
    figures(
        "terminate-backends",
        jobs=total,
        backends_terminated=terminated,
        ran_twice=sum(1 for count in started.values() if count > 1),
        terminated_to_first_outcome_written_s=f"{float(recovery):.2f}",
        new_job_enqueue_to_completed_s=f"{new_job_latency:.2f}",
    )


@pytest.mark.slow
def test_three_workers_of_four_threads_run_each_of_5000_jobs_exactly_once(
    database_url: str, app: App, runs_table: str, start_worker: StartWorker
) -> None:
    # given three worker processes of four threads each
    workers = [start_worker(*FAST_RESCUE, "--concurrency", "4", ready=False) for _ in range(3)]
    for worker in workers:
        worker.wait_ready()

    # when 5,000 jobs are enqueued at once
    total = 5000
    began = time.monotonic()
    app.enqueue_many(None, [("record", {})] * total)
    wait_until(
        lambda: state_counts(database_url, runs_table)["completed"] == total,
        timeout=120,
        interval=0.2,
    )
    elapsed = time.monotonic() - began

    # then every job ran exactly once, on its first attempt, and every worker took a share
    ran = run_counts(database_url, runs_table)
    assert len(ran) == total
    assert set(ran.values()) == {1}
    assert query(
        database_url,
        sql.SQL(
            "SELECT attempts, jsonb_array_length(errors), count(*) FROM {} GROUP BY 1, 2"
        ).format(sql.Identifier(runs_table, "jobs")),
    ) == [(1, 0, total)]
    shares = query(
        database_url,
        sql.SQL("SELECT worker_id, count(*) FROM {} GROUP BY 1 ORDER BY 2 DESC").format(
            sql.Identifier(runs_table, "runs")
        ),
    )
    assert len(shares) == 3
    assert [worker.stop() for worker in workers] == [0, 0, 0]
    figures(
        "3x4-exactly-once",
        jobs=total,
        runs=sum(ran.values()),
        duplicates=0,
        per_worker=[count for _, count in shares],
        seconds=f"{elapsed:.1f}",
        jobs_per_s=round(total / elapsed),
    )


@pytest.mark.slow
def test_sigkilling_random_workers_while_5000_jobs_drain_loses_nothing(
    database_url: str, app: App, runs_table: str, start_worker: StartWorker
) -> None:
    # given three supervised workers of four threads draining 5,000 jobs
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    total = 5000
    enqueue_sleeps(app, total, 0.02)
    fleet = Fleet(lambda: start_worker(*FAST_RESCUE, "--concurrency", "4", ready=False), size=3)

    # when a random worker is killed with SIGKILL every 1 to 2.5 seconds (and replaced)
    began = time.monotonic()
    next_kill = began + rng.uniform(1.0, 2.0)
    killed: list[int] = []
    while state_counts(database_url, runs_table)["completed"] < total:
        assert time.monotonic() - began < 150, f"not drained; seed {seed}"
        if time.monotonic() >= next_kill:
            killed.append(fleet.kill_one(rng))
            next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
        fleet.replace_dead()
        time.sleep(0.1)
    elapsed = time.monotonic() - began

    # then every job completed; only jobs running at a kill ran twice, and each of those
    # carries a "worker lost" entry naming a killed worker
    assert [pid for pid, _ in fleet.deaths] == killed, "a worker died that was not killed"
    started = run_counts(database_url, runs_table, "started")
    assert len(started) == total
    duplicates = {job_id for job_id, count in started.items() if count > 1}
    lost = lost_worker_errors(database_url, runs_table)
    assert duplicates <= set(lost)
    assert unaccounted_attempts(database_url, runs_table) == []
    assert {worker_pid(w) for workers in lost.values() for w in workers} <= set(killed)
    assert len(killed) >= 3, f"drained too fast for the test to mean much; seed {seed}"
    assert fleet.stop() == [0, 0, 0]
    figures(
        "chaos",
        seed=seed,
        jobs=total,
        kills=len(killed),
        rescued=len(lost),
        ran_twice=len(duplicates),
        extra_runs=sum(started.values()) - total,
        seconds=f"{elapsed:.1f}",
    )


@pytest.mark.slow
def test_jobs_that_kill_their_worker_end_failed_while_the_rest_complete(
    database_url: str,
    app: App,
    runs_table: str,
    observer: psycopg.Connection[Any],
    start_worker: StartWorker,
) -> None:
    # given two supervised workers, and 200 ordinary jobs around two that kill the
    # process running them: one calls os._exit, one segfaults
    poison = {"max_attempts": 2}
    ids = app.enqueue_many(
        None,
        [("record", {})] * 100
        + [("poison.exit", {}, poison), ("poison.segfault", {}, poison)]
        + [("record", {})] * 100,
    )
    exit_id, segfault_id = ids[100], ids[101]
    fleet = Fleet(
        lambda: start_worker(*FAST_RESCUE, "--concurrency", "2", ready=False, app=POISON_APP),
        size=2,
    )

    # when they run (every death is replaced, as a process supervisor would)
    began = time.monotonic()

    def settled() -> bool:
        fleet.replace_dead()
        counts = state_counts(database_url, runs_table)
        return counts["completed"] == 200 and counts["failed"] == 2

    wait_until(
        settled,
        timeout=90,
        interval=0.1,
        message=lambda: str(state_counts(database_url, runs_table)),
    )
    elapsed = time.monotonic() - began
    fleet.replace_dead()

    # then each poison job failed after its two attempts, each one a lost worker
    for poison_id in (exit_id, segfault_id):
        row = job(observer, runs_table, poison_id)
        assert (row["state"], row["attempts"]) == ("failed", 2)
        assert [e["attempt"] for e in row["errors"]] == [1, 2]
        assert all(e["error"].startswith("worker lost: ") for e in row["errors"])
    # Four poison attempts, each fatal; two of them may share a process (two threads).
    statuses = sorted(status for _, status in fleet.deaths)
    assert 2 <= len(statuses) <= 4
    assert set(statuses) <= {3, -signal.SIGSEGV}
    lost = lost_worker_errors(database_url, runs_table)
    assert {worker_pid(w) for workers in lost.values() for w in workers} <= {
        pid for pid, _ in fleet.deaths
    }
    assert unaccounted_attempts(database_url, runs_table) == []
    assert fleet.stop() == [0, 0]
    figures(
        "poison-kills-worker",
        jobs=len(ids),
        worker_deaths=len(statuses),
        exit_statuses=statuses,
        poison_final="failed after 2 attempts, 2 'worker lost' errors",
        bystanders_rescued=len(lost) - 2,
        seconds=f"{elapsed:.1f}",
    )


@pytest.mark.slow
def test_task_that_hangs_ignoring_its_stop_flag_fails_while_the_rest_complete(
    database_url: str,
    app: App,
    runs_table: str,
    observer: psycopg.Connection[Any],
    start_worker: StartWorker,
) -> None:
    # given a worker of three threads, a task that never returns nor looks at its stop
    # flag (timeout 0.5 s, two attempts), and 100 ordinary jobs behind it
    worker = start_worker(
        "--rescue-after", "2", "--shutdown-timeout", "1", "--concurrency", "3", app=POISON_APP
    )
    hang_id = app.enqueue(None, "poison.hang", max_attempts=2)
    app.enqueue_many(None, [("record", {})] * 100)

    # when the hung attempts time out
    wait_until(
        lambda: state_counts(database_url, runs_table) == {"completed": 100, "failed": 1},
        timeout=30,
        message=worker.describe,
    )

    # then the job failed after two timed-out attempts, the rest completed on the one
    # thread left, and the worker, two threads stuck for good, still shuts down cleanly
    row = job(observer, runs_table, hang_id)
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert [(e["attempt"], e["error"], e["timed_out"]) for e in row["errors"]] == [
        (1, "TimeoutError: timed out after 0.5s", True),
        (2, "TimeoutError: timed out after 0.5s", True),
    ]
    assert run_counts(database_url, runs_table, "hang") == {hang_id: 2}
    assert worker.running()
    stopping = time.monotonic()
    assert worker.stop() == 0
    figures(
        "poison-hang",
        jobs=101,
        poison_final=f"{row['state']} after {row['attempts']} timed-out attempts",
        stuck_threads=2,
        shutdown_s=f"{time.monotonic() - stopping:.1f}",
    )
