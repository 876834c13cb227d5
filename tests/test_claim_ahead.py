"""Claim-ahead never bends the order or the guarantees: real `pgjobs work` processes.

A worker claims jobs ahead of its threads to keep them busy. These tests show, with
real worker processes and real signals, that it still starts jobs by priority, holds
no more than its claim window's worth (so another worker's idle threads get the rest),
and that a worker killed with jobs in its buffer costs those jobs no attempt.
"""

from __future__ import annotations

import signal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from tests.helpers import StartWorker, job, runs, wait_for_job, wait_until

Connection = psycopg.Connection[Any]
pytestmark = pytest.mark.slow


def started_labels(observer: Connection, schema: str) -> list[str]:
    """Labels of the recorded runs, in the order they started."""
    return [r["label"] for r in runs(observer, schema)]


def count(observer: Connection, schema: str, where: str, params: tuple[Any, ...] = ()) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE " + where).format(sql.Identifier(schema, "jobs"))
    row = observer.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def warm_up(app: App, observer: Connection, worker: Any) -> None:
    """Let the worker measure short jobs, so that it claims ahead from now on."""
    wait_for_job(observer, app.schema, app.enqueue(None, "noop", {}), worker=worker)


def test_held_jobs_start_in_priority_order(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a one-thread worker that claims ahead
    worker = start_worker("--concurrency", "1")
    warm_up(app, observer, worker)
    # when: five jobs arrive together, so that one claim takes them all
    priorities = [0, 5, -3, 10, 1]
    ids = app.enqueue_many(
        None, [("record", {"label": str(p)}, {"priority": p}) for p in priorities]
    )
    for job_id in ids:
        wait_for_job(observer, app.schema, job_id, worker=worker)
    # then
    assert started_labels(observer, app.schema) == ["10", "5", "1", "0", "-3"]


def test_a_job_of_higher_priority_overtakes_what_a_worker_holds(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a one-thread worker allowed to hold 40 jobs, busy with 55 jobs of 20 ms
    worker = start_worker("--concurrency", "1", "--prefetch", "40")
    warm_up(app, observer, worker)
    app.enqueue_many(None, [("sleep", {"seconds": 0.02})] * 55)
    wait_until(lambda: len(runs(observer, app.schema)) >= 4, message="the backlog did not start")
    # when: an urgent job comes
    started_before = started_labels(observer, app.schema).count("started")
    urgent = app.enqueue(None, "record", {"label": "urgent"}, priority=10)
    wait_for_job(observer, app.schema, urgent, worker=worker)
    # then: it waited for no more than the claim window's worth of what was held (0.25 s
    # of 20 ms jobs, and a few more while the next claim was due), not for 40 of them
    labels = started_labels(observer, app.schema)
    overtaken = labels[: labels.index("urgent")].count("started") - started_before
    assert overtaken <= 20, labels


def test_a_worker_does_not_hoard_slow_jobs_that_another_could_run(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a backlog of 3,000 no-op jobs and then 8 jobs of 1.5 s
    app.enqueue_many(None, [("noop", {})] * 3000)
    slow = app.enqueue_many(None, [("sleep", {"seconds": 1.5})] * 8)
    # when: worker A drains the backlog, and worker B starts once the no-ops are done
    first = start_worker("--concurrency", "2")
    wait_until(
        lambda: count(observer, app.schema, "task = 'noop' AND state = 'completed'") == 3000,
        timeout=30,
        message=first.describe,
    )
    second = start_worker("--concurrency", "2")
    for job_id in slow:
        wait_for_job(observer, app.schema, job_id, timeout=20, worker=first)
    # then: A kept only what its threads could start within its claim window; B ran the
    # rest (without the window, A took all 8 and ran them two by two)
    ran_by = [job(observer, app.schema, job_id)["worker_id"] for job_id in slow]
    assert ran_by.count(second.worker_id()) >= 3, ran_by
    assert ran_by.count(first.worker_id()) >= 2, ran_by


def test_a_killed_workers_unstarted_jobs_come_back_with_their_attempt(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a worker that runs a long job and holds 20 quick ones of a single attempt
    # (it leads the maintenance until it counts as lost: after its own --rescue-after)
    doomed = start_worker(
        "--concurrency", "1", "--claim-window", "1", "--queues", "busy", "--rescue-after", "1"
    )
    warm_up_id = app.enqueue(None, "noop", {}, queue="busy")
    wait_for_job(observer, app.schema, warm_up_id, worker=doomed)
    long_id, *quick = app.enqueue_many(
        None,
        [("sleep", {"seconds": 30}, {"queue": "busy", "priority": 10})]
        + [("record", {"label": "quick"}, {"queue": "busy", "max_attempts": 1})] * 20,
    )
    wait_until(
        lambda: count(observer, app.schema, "id = %s AND began_at IS NOT NULL", (long_id,)),
        message="the long job was not marked as begun",
    )
    assert count(observer, app.schema, "id = ANY(%s) AND state = 'running'", (quick,)) == 20
    # when: it is killed (SIGKILL: nothing is put back), and another worker rescues
    doomed.send(signal.SIGKILL)
    doomed.wait_exit()
    rescuer = start_worker("--rescue-after", "1", "--queues", "busy")
    # then: every quick job runs on its first attempt, nothing charged, nothing in errors
    for job_id in quick:
        done = wait_for_job(observer, app.schema, job_id, "completed", worker=rescuer)
        assert (done["attempts"], done["errors"]) == (1, [])
    # and: the long job's attempt began, so it counts as lost
    wait_until(lambda: job(observer, app.schema, long_id)["errors"], message=rescuer.describe)
    [lost] = job(observer, app.schema, long_id)["errors"]
    assert lost["error"].startswith("worker lost:")
