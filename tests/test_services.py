"""One pass of each worker service, run in-process against the test's own schema.

The subprocess tests (test_worker.py, test_reliability.py) show the worker as users run
it; these call `run_once()` directly, so each service's behaviour is checked without
timers, signals or other services.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App, Workflow
from pgjobs.types import ClaimedJob, Outcome
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.completer import Completer
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.events import Event, EventBus, JobEnded, OutcomesWritten
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.fetcher import Claims, Fetcher
from pgjobs.worker.heartbeat import Heartbeat
from pgjobs.worker.listener import Listener
from pgjobs.worker.outcomes import OutcomePolicy, completed, failed_attempt
from pgjobs.worker.queues import QueueSpec
from pgjobs.worker.rescuer import Rescuer
from tests.helpers import job, wait_until

Connection = psycopg.Connection[Any]
WORKER = "test-worker"


@pytest.fixture
def connection(database_url: str) -> Iterator[ResilientConnection]:
    """A worker connection, as each service gets one."""
    resilient = ResilientConnection(database_url, "test")
    yield resilient
    resilient.close()


def claim(app: App, connection: ResilientConnection, limit: int = 10) -> list[ClaimedJob]:
    return app.data.claims.claim(
        connection.connection(), limit=limit, queue=None, worker_id=WORKER
    )[0]


def recorded(events: EventBus) -> list[Event]:
    seen: list[Event] = []
    events.subscribe(seen.append)
    return seen


def fetcher_of(app: App, connection: ResilientConnection, buffer: ClaimBuffer) -> Fetcher:
    claims = Claims(connection, app.data.claims, QueueSpec(None), WORKER, random=lambda: 0)
    return Fetcher(claims, buffer, poll_interval=1, give_back=lambda jobs: None)


def test_fetcher_pass_claims_as_many_jobs_as_there_is_room(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: 10 waiting jobs and room for 2 running + 3 claimed ahead, for short jobs
    ids = app.enqueue_many(None, [("noop", {})] * 10)
    buffer = ClaimBuffer(concurrency=2, prefetch=3)
    buffer.estimates.observe("noop", 0.001)
    fetcher = fetcher_of(app, connection, buffer)
    # when
    claimed = fetcher.run_once()
    # then
    assert claimed == 5
    assert buffer.waiting() == 5 and buffer.room() == 0
    assert sorted([job.id for job in buffer.waiting_jobs()]) == ids[:5]
    assert job(observer, app.schema, ids[0])["state"] == "running"
    assert fetcher.run_once() == 0  # no room, no claim


def test_a_claim_commits_durably_unless_asked_not_to_wait_for_the_disk(
    app: App, database_url: str
) -> None:
    # given: two waiting jobs and a connection in a transaction of its own
    app.enqueue_many(None, [("noop", {})] * 2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")  # the test cluster's default is off
        conn.autocommit = False
        # when: a claim as `pgjobs work` makes it by default
        [durable], _ = app.data.claims.claim(conn, limit=1, queue=None, worker_id=WORKER)
        # then: its transaction commits as configured
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        conn.commit()
        # when: a claim as `--async-claim-commit` makes it
        [fast], _ = app.data.claims.claim(
            conn, limit=1, queue=None, worker_id=WORKER, async_commit=True
        )
        # then: this transaction commits asynchronously, the next one as configured
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        conn.commit()
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    assert (durable.attempt, fast.attempt) == (1, 1)


def test_the_testing_helper_keeps_the_callers_commit_durable(app: App, database_url: str) -> None:
    from pgjobs.testing import Jobs

    # given: a test's transaction with a job in it
    with psycopg.connect(database_url, autocommit=True) as conn, Jobs(app, conn) as jobs:
        conn.execute("SET synchronous_commit = on")  # the test cluster's default is off
        conn.autocommit = False
        app.enqueue(conn, "noop", {})
        # when: the helper claims and runs it in that transaction
        jobs.run()
        # then
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        conn.rollback()


def _claimed(count: int, first: int = 1) -> list[ClaimedJob]:
    return [
        ClaimedJob(n, "default", "noop", "{}", 1, 1, time.time())
        for n in range(first, first + count)
    ]


def test_a_burst_of_jobs_reaches_every_idle_thread() -> None:
    # given: four threads waiting, each job holds its thread until released
    buffer = ClaimBuffer(concurrency=4, prefetch=0)
    release = threading.Event()
    started: list[int] = []

    def thread() -> None:
        while (claimed := buffer.take()) is not None:
            started.append(claimed.id)
            release.wait(10)
            buffer.done(claimed, 0.001)

    threads = [threading.Thread(target=thread, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: buffer.idle_threads() == 4)
    # when: four jobs arrive at once (threads are woken one after the other)
    buffer.add(_claimed(4), ready=range(1, 5))
    # then: all four run at the same time
    wait_until(lambda: buffer.running() == 4)
    assert sorted(started) == [1, 2, 3, 4]
    release.set()
    buffer.close()
    for t in threads:
        t.join(5)


def test_executor_pass_runs_the_next_job_and_reports_its_outcome(
    app: App, connection: ResilientConnection
) -> None:
    # given
    ran: list[int] = []

    @app.task(name="adds")
    def adds(x: int) -> None:
        ran.append(x)

    app.enqueue(None, "adds", {"x": 41})
    buffer = ClaimBuffer(concurrency=1, prefetch=0)
    jobs = claim(app, connection)
    buffer.add(jobs, ready=[job.id for job in jobs])
    reported: list[Outcome] = []
    events = EventBus()
    seen = recorded(events)
    pool = ExecutorPool(
        buffer=buffer,
        policy=OutcomePolicy(app.tasks, app.backoff, lambda: 0, WORKER),
        report=reported.append,
        events=events,
    )
    # when
    assert pool.run_once() is True
    # then
    assert ran == [41]
    assert [o.state for o in reported] == ["completed"]
    assert [e.ending.value for e in seen if isinstance(e, JobEnded)] == ["completed"]
    assert buffer.running() == 0
    assert pool.run_once() is False


def test_completer_pass_writes_every_queued_outcome_in_one_batch(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given
    ids = app.enqueue_many(None, [("noop", {})] * 3)
    jobs = claim(app, connection)
    events = EventBus()
    seen = recorded(events)
    completer = Completer(connection, app.data.claims, WORKER, events, flush_delay=0)
    for claimed in jobs:
        completer.submit(completed(claimed))
    # when
    written = completer.run_once()
    # then
    assert written == 3
    assert [job(observer, app.schema, i)["state"] for i in ids] == ["completed"] * 3
    [batch] = [e for e in seen if isinstance(e, OutcomesWritten)]
    assert batch.applied == frozenset(ids)
    assert completer.pending_ids() == []


def test_completer_writes_a_workflow_steps_completion_without_the_batching_delay(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: a long batching delay, a plain outcome and a stored result queued
    plain_id, result_id = app.enqueue_many(None, [("noop", {})] * 2)
    workflow = Workflow("w", app=app)
    workflow.add("noop", after=[workflow.add("noop")])
    dependent_id = workflow.enqueue(None)[1]
    plain, with_result, step = sorted(claim(app, connection), key=lambda claimed: claimed.id)
    completer = Completer(connection, app.data.claims, WORKER, EventBus(), flush_delay=60)
    completer.submit(completed(plain))
    completer.submit(completed(with_result, result_json='{"ok": true}'))
    assert completer.run_once() == 0  # they wait for others to join them
    # when
    completer.submit(completed(step))
    # then: all are due at once, written in one batch, and the dependent is released
    assert completer.run_once() == 3
    assert job(observer, app.schema, result_id)["result"] == {"ok": True}
    assert job(observer, app.schema, plain_id)["state"] == "completed"
    assert job(observer, app.schema, dependent_id)["state"] == "available"
    completer.submit(completed(plain._replace(attempt=2)))
    assert completer.run_once() == 0  # and the delay applies again to what follows


def test_completer_stores_error_text_jsonb_cannot_hold_by_replacing_it(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: an error message with a NUL and a lone surrogate, batched with a success
    [ok_id, bad_id] = app.enqueue_many(None, [("noop", {}), ("noop", {})])
    ok, bad = claim(app, connection)
    entry = {
        "attempt": 1,
        "error": "bad byte \x00 here \ud800",
        "traceback": "x\x00",
        "worker": WORKER,
    }
    completer = Completer(connection, app.data.claims, WORKER, EventBus(), flush_delay=0)
    completer.submit(completed(ok))
    completer.submit(failed_attempt(bad, entry, retry_delay=None))
    # when
    completer.run_once()
    # then: both outcomes are written, the text repaired
    assert job(observer, app.schema, ok_id)["state"] == "completed"
    failed = job(observer, app.schema, bad_id)
    assert failed["state"] == "failed"
    assert failed["errors"][0]["error"] == "bad byte \ufffd here \ufffd"
    assert failed["errors"][0]["traceback"] == "x\ufffd"


def test_completer_isolates_an_outcome_the_database_refuses_and_writes_the_others(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: four outcomes, one of which the database refuses (an infinite retry delay)
    ids = app.enqueue_many(None, [("noop", {})] * 4)
    jobs = claim(app, connection)
    entry = {"attempt": 1, "error": "ValueError: x", "traceback": None, "worker": WORKER}
    completer = Completer(connection, app.data.claims, WORKER, EventBus(), flush_delay=0)
    for claimed in jobs:
        if claimed.id == ids[2]:
            completer.submit(failed_attempt(claimed, entry, retry_delay=math.inf))
        else:
            completer.submit(completed(claimed))
    # when
    completer.run_once()
    # then: the others are completed; the refused one failed, saying why
    states = [job(observer, app.schema, i)["state"] for i in ids]
    assert states == ["completed", "completed", "failed", "completed"]
    [error] = job(observer, app.schema, ids[2])["errors"]
    assert error["error"].startswith("outcome could not be stored:")
    assert error["worker"] == WORKER


def test_completer_makes_producers_wait_once_its_backlog_is_full(
    app: App, connection: ResilientConnection
) -> None:
    # given: a completer that holds at most 2 unwritten outcomes, holding 2
    app.enqueue_many(None, [("noop", {})] * 3)
    first, second, third = claim(app, connection)
    completer = Completer(
        connection, app.data.claims, WORKER, EventBus(), max_pending=2, flush_delay=0
    )
    completer.submit(completed(first))
    completer.submit(completed(second))
    # when: a third outcome is submitted from another thread
    submitted = threading.Event()
    thread = threading.Thread(target=lambda: (completer.submit(completed(third)), submitted.set()))
    thread.start()
    # then: it waits until the backlog is written
    assert not submitted.wait(0.3)
    completer.run_once()
    assert submitted.wait(5)
    thread.join()
    assert completer.pending() == 1


def test_heartbeat_pass_refreshes_held_jobs_and_reports_cancelled_ones_lost(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: two claimed jobs with an old heartbeat, one of which gets cancelled
    kept_id, cancelled_id = app.enqueue_many(None, [("noop", {}), ("noop", {})])
    claim(app, connection)
    jobs_table = sql.Identifier(app.schema, "jobs")
    observer.execute(
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '1 hour'").format(jobs_table)
    )
    observer.execute(
        sql.SQL("UPDATE {} SET state = 'cancelled' WHERE id = %s").format(jobs_table),
        [cancelled_id],
    )
    lost: list[set[int]] = []
    heartbeat = Heartbeat(
        connection,
        app.data.claims,
        WORKER,
        held=lambda: {kept_id: None, cancelled_id: None},
        on_lost=lambda claims: lost.append(set(claims)),
        interval=1,
    )
    # when
    heartbeat.run_once()
    # then
    beat = job(observer, app.schema, kept_id)["heartbeat_at"]
    [(now,)] = observer.execute("SELECT now()").fetchall()
    assert (now - beat).total_seconds() < 5
    assert lost == [{cancelled_id}]
    assert heartbeat.is_current()


def test_rescuer_pass_returns_jobs_of_a_silent_worker_unless_its_own_beat_is_stale(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: a job run by a worker that stopped heart-beating a minute ago
    [job_id] = app.enqueue_many(None, [("noop", {})])
    claimed = claim(app, connection)
    app.data.claims.ready_jobs(
        connection.connection(), [job.id for job in claimed], worker_id=WORKER
    )
    fall_silent(app, observer)
    current = False
    rescuer = silent_workers_rescuer(app, connection, may_rescue=lambda: current)
    # when this worker's own heartbeat is not current, it rescues nothing
    assert rescuer.run_once() == []
    assert job(observer, app.schema, job_id)["state"] == "running"
    # when it is
    current = True
    assert rescuer.run_once() == [(job_id, "available", True)]
    rescued = job(observer, app.schema, job_id)
    assert (rescued["state"], rescued["attempts"]) == ("available", 1)
    assert "worker lost: test-worker" in rescued["errors"][0]["error"]


def fall_silent(app: App, observer: Connection) -> None:
    """Every held job's worker falls silent for a minute."""
    observer.execute(
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '1 minute'").format(
            sql.Identifier(app.schema, "jobs")
        )
    )


def silent_workers_rescuer(
    app: App, connection: ResilientConnection, *, may_rescue: Callable[[], bool]
) -> Rescuer:
    """A rescuer of workers silent for 30 s."""
    return Rescuer(
        connection,
        app.data.maintenance,
        "rescuer",
        rescue_after=30,
        interval=1,
        may_rescue=may_rescue,
    )


def rescue_after_silence(
    app: App, connection: ResilientConnection, observer: Connection
) -> list[tuple[int, str, bool]]:
    """Every held job's worker falls silent for a minute; a rescuer's pass, sorted."""
    fall_silent(app, observer)
    return sorted(silent_workers_rescuer(app, connection, may_rescue=lambda: True).run_once())


def test_rescue_gives_back_the_attempt_of_a_job_that_only_waited_in_a_lost_buffer(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: a worker died running one job (ready, so it may have begun) with two more
    # claimed ahead in its buffer
    begun, waiting, later = app.enqueue_many(None, [("noop", {})] * 3)
    claim(app, connection)
    app.data.claims.ready_jobs(connection.connection(), [begun], worker_id=WORKER)
    before = job(observer, app.schema, waiting)
    # when
    rescued = rescue_after_silence(app, connection, observer)
    # then: the begun attempt is lost and counted; the others never ran
    assert rescued == [
        (begun, "available", True),
        (waiting, "available", False),
        (later, "available", False),
    ]
    returned = job(observer, app.schema, waiting)
    assert (returned["state"], returned["attempts"], returned["errors"]) == ("available", 0, [])
    assert returned["run_at"] == before["run_at"]  # its place in line is kept
    assert job(observer, app.schema, begun)["attempts"] == 1


def test_a_worker_lists_the_jobs_it_readied_in_its_row_and_the_rescue_reads_it(
    app: App, connection: ResilientConnection, observer: Connection
) -> None:
    # given: a registered worker that readied two of its four claimed jobs, by its row
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (id, host, pid, concurrency, version, rescue_after)"
            " VALUES (%s, 'h', 1, 2, 'v', 30)"
        ).format(sql.Identifier(app.schema, "workers")),
        [WORKER],
    )
    ids = app.enqueue_many(None, [("noop", {})] * 4)
    claim(app, connection)
    app.data.claims.ready_jobs(connection.connection(), ids[:2], worker_id=WORKER)
    assert all(job(observer, app.schema, i)["began_at"] is None for i in ids)
    # when it dies and is rescued
    rescued = rescue_after_silence(app, connection, observer)
    # then: the readied ones count as begun, the others go back unrun
    assert [(i, began) for i, _, began in rescued] == [
        (ids[0], True),
        (ids[1], True),
        (ids[2], False),
        (ids[3], False),
    ]


def test_listener_pass_wakes_the_fetcher_for_wanted_queues_only(
    app: App, connection: ResilientConnection, database_url: str
) -> None:
    # given: a listener for queue "mail" that has started listening
    woken: list[bool] = []
    listener = Listener(
        connection,
        app.data.maintenance,
        wants=lambda q: q == "mail",
        wake=lambda: woken.append(True),
    )
    listener.run_once()
    woken.clear()
    # when: jobs are committed to another queue, then to "mail"
    app.enqueue(None, "noop", queue="other")
    assert listener.run_once() == 0
    app.enqueue(None, "noop", queue="mail")
    # then
    assert wait_until(listener.run_once, timeout=5) == 1
    assert woken == [True]


def test_worker_holds_no_more_than_concurrency_prefetch_and_unwritten_outcomes(
    app: App, database_url: str, observer: Connection
) -> None:
    # given: a worker whose outcome writes block on a row this test locks
    release = threading.Event()

    @app.task(name="slow")
    def slow() -> None:
        release.wait(10)

    @app.task(name="quick")
    def quick() -> None:
        pass

    slow_id = app.enqueue(None, "slow", priority=10)
    app.enqueue_many(None, [("quick", {})] * 200)
    settings = WorkerSettings(concurrency=2, prefetch=3, max_unwritten=4, poll_interval=0.05)
    worker = Worker(app, settings, worker_id=WORKER)
    worker.start()
    try:
        wait_until(lambda: job(observer, app.schema, slow_id)["state"] == "running")
        with psycopg.connect(database_url) as locker:
            locker.execute(
                sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(
                    sql.Identifier(app.schema, "jobs_live")
                ),
                [slow_id],
            )
            release.set()
            # when: the slow job's outcome cannot be written, the others pile up behind it
            wait_until(lambda: worker.parts.completer.pending() >= 4, timeout=10)

            def held() -> int:
                [(count,)] = observer.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE state = 'running'").format(
                        sql.Identifier(app.schema, "jobs")
                    )
                ).fetchall()
                return int(count)

            # then: claims stop at 2 threads + 3 claimed ahead + 4 unwritten outcomes
            wait_until(lambda: worker.parts.buffer.room() == 0, timeout=10)
            assert held() <= 2 + 3 + 4
        wait_until(lambda: held() == 0, timeout=20)
    finally:
        worker.shutdown()
