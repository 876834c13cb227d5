"""`pgjobs.testing`: asserting what was enqueued and running it inline, as a worker would."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import pgjobs
from pgjobs import App
from pgjobs.testing import Jobs, RunawayJobsError
from tests.helpers import jobs as committed_jobs

Connection = psycopg.Connection[Any]


# --- asserting what was enqueued ------------------------------------------------------------


def test_an_uncommitted_job_is_seen_on_its_connection_only(
    app: App, test_conn: Connection, helper: Jobs, observer: Connection, schema: str
) -> None:
    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> None: ...

    job_id = send.enqueue(test_conn, to="a@example.com")
    [job] = helper.assert_enqueued(send, args={"to": "a@example.com"}, queue="mail")
    assert job.id == job_id
    assert committed_jobs(observer, schema) == []


def test_args_are_a_subset_and_options_are_compared(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="mail.send")
    def send(to: str, subject: str) -> None: ...

    send.options(queue="mail", priority=3, delay=60, unique_key="k").enqueue(
        test_conn, to="a@example.com", subject="Hi"
    )
    found = helper.assert_enqueued(
        "mail.send",
        args={"to": "a@example.com", "subject": mock.ANY},
        queue="mail",
        priority=3,
        delay=timedelta(minutes=1),
        unique_key="k",
        max_attempts=20,
        where=lambda job: job.attempts == 0,
    )
    assert len(found) == 1
    helper.assert_not_enqueued(send, args={"to": "b@example.com"})
    helper.assert_not_enqueued(send, delay=30)
    helper.assert_not_enqueued(send, priority=0)


def test_a_failed_assertion_says_why_each_job_differs(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="mail.send")
    def send(to: str) -> None: ...

    job_id = send.enqueue(test_conn, to="b@example.com")
    with pytest.raises(AssertionError) as failure:
        helper.assert_enqueued(send, args={"to": "a@example.com"}, queue="mail")
    message = str(failure.value)
    assert message.startswith(
        "expected a job matching task 'mail.send', args including {'to': 'a@example.com'}, "
        "state available, queue 'mail'; found 0. The newest jobs of task 'mail.send':"
    )
    assert f"#{job_id} mail.send available queue='default'" in message
    assert "args['to'] is 'b@example.com', not 'a@example.com'; queue is 'default'" in message


def test_assert_not_enqueued_names_the_jobs_it_found(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    app.enqueue(test_conn, "mail.send", {"to": "a@example.com"})
    with pytest.raises(AssertionError, match=r"expected no job matching state available"):
        helper.assert_not_enqueued()
    with pytest.raises(AssertionError, match=r"mail\.send available .*'to': 'a@example.com'"):
        helper.assert_not_enqueued("mail.send")


def test_count_is_exact_when_given(app: App, test_conn: Connection, helper: Jobs) -> None:
    app.enqueue_many(test_conn, [("mail.send", {"n": n}) for n in range(3)])
    assert [job.payload for job in helper.assert_enqueued("mail.send", count=3)] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    with pytest.raises(AssertionError, match=r"expected 2 jobs matching .* found 3"):
        helper.assert_enqueued("mail.send", count=2)
    helper.assert_enqueued("mail.send", count=0, state="failed")


def test_bad_filters_are_refused(helper: Jobs) -> None:
    with pytest.raises(TypeError, match="unknown job filter"):
        helper.find("x", quue="mail")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="state must be among"):
        helper.find("x", state="done")
    with pytest.raises(ValueError, match="delay must be"):
        helper.find("x", delay=-1)
    with pytest.raises(ValueError, match="at most one of until"):
        helper.run(delayed=True, advance=5)
    with pytest.raises(ValueError, match="until must be an aware datetime"):
        helper.run(until=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="max_jobs"):
        helper.run(max_jobs=0)
    with pytest.raises(ValueError, match="queues must be a non-empty list"):
        helper.run(queues="mail")


def test_a_sqlalchemy_session_is_read_and_run_in_its_transaction(
    app: App, database_url: str, observer: Connection, schema: str
) -> None:
    @app.task(name="t.work")
    def work(n: int) -> None:
        app.enqueue(None, "t.next", {"n": n})  # into the session's transaction too

    url = make_url(database_url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    with Session(engine) as session, Jobs(app, session) as jobs:
        work.enqueue(session, n=1)
        jobs.assert_enqueued(work, args={"n": 1})
        assert jobs.run().counts == {"completed": 1}
        jobs.assert_enqueued("t.next", args={"n": 1})
        assert committed_jobs(observer, schema) == []
        session.rollback()
    engine.dispose()
    assert committed_jobs(observer, schema) == []


def test_with_no_connection_it_sees_committed_jobs_only(
    app: App, conn: Connection, observer: Connection, schema: str
) -> None:
    with Jobs(app) as jobs:
        app.enqueue(conn, "t.later", {})
        jobs.assert_not_enqueued()
        conn.commit()
        jobs.assert_enqueued("t.later")


# --- running jobs as a worker would ---------------------------------------------------------


def test_a_failing_attempt_is_retried_after_its_backoff(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="t.flaky", backoff=pgjobs.Backoff(base=30, jitter=0))
    def flaky() -> None:
        raise ConnectionError("down")

    job_id = flaky.enqueue(test_conn)
    result = helper.run()
    assert result.counts == {"retried": 1} and result.ids("retried") == [job_id]
    job = helper.get(job_id)
    assert (job.state, job.attempts) == ("available", 1)
    assert job.run_at - job.started_at == timedelta(seconds=30)  # type: ignore[operator]
    [entry] = job.errors
    assert entry["error"] == "ConnectionError: down"
    assert entry["worker"] == helper.worker_id and entry["worker"].startswith("testing:")
    assert "raise ConnectionError" in entry["traceback"]
    assert helper.run().counts == {}  # its retry is not due
    assert helper.run(advance=29).counts == {}
    assert helper.run(advance=31).counts == {"retried": 1}
    with pytest.raises(ConnectionError, match="down"):
        helper.run(delayed=True).raise_errors()


def test_fail_job_and_snooze_job_end_as_in_a_worker(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="t.fail")
    def fail() -> None:
        raise pgjobs.FailJob("no")

    @app.task(name="t.snooze")
    def snooze() -> None:
        raise pgjobs.SnoozeJob(120)

    failed_id, snoozed_id = fail.enqueue(test_conn), snooze.enqueue(test_conn)
    assert helper.run().counts == {"failed": 1, "snoozed": 1}
    failed = helper.get(failed_id)
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert failed.last_error == "pgjobs.errors.FailJob: no"
    snoozed = helper.get(snoozed_id)
    assert (snoozed.state, snoozed.attempts, snoozed.max_attempts) == ("available", 1, 21)
    assert snoozed.errors == []


def test_a_timeout_is_recorded_and_the_task_told_to_stop(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    stopped = threading.Event()

    @app.task(name="t.slow", timeout=0.2, pass_context=True, max_attempts=1)
    def slow(ctx: pgjobs.JobContext) -> None:
        if ctx.stop.wait(10):
            stopped.set()

    job_id = slow.enqueue(test_conn)
    result = helper.run()
    assert result.counts == {"timed_out": 1} and stopped.is_set()
    job = helper.get(job_id)
    assert job.state == "failed"
    assert job.errors[0]["timed_out"] is True
    with pytest.raises(TimeoutError, match=r"timed out after 0\.2s"):
        result.raise_errors()


def test_a_job_of_an_unknown_task_fails_its_attempt(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    job_id = app.enqueue(test_conn, "not.registered", {}, max_attempts=1)
    assert helper.run().counts == {"failed": 1}
    assert "unknown task 'not.registered'" in (helper.get(job_id).last_error or "")


def test_jobs_that_jobs_enqueue_run_only_when_draining(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="t.first")
    def first() -> None:
        second.enqueue(None)

    @app.task(name="t.second")
    def second() -> None: ...

    first.enqueue(test_conn)
    assert helper.run().counts == {"completed": 1}
    helper.assert_enqueued(second)
    first.enqueue(test_conn)
    assert helper.run(drain=True).counts == {"completed": 3}
    helper.assert_enqueued(state="completed", count=4)


def test_a_runaway_drain_stops_and_puts_the_next_job_back(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="t.forever")
    def forever() -> None:
        forever.enqueue(None)

    forever.enqueue(test_conn)
    with pytest.raises(RunawayJobsError, match="ran 5 attempts and jobs are still due"):
        helper.run(drain=True, max_jobs=5)
    [waiting] = helper.assert_enqueued(forever)
    assert (waiting.attempts, waiting.worker_id) == (0, None)
    helper.assert_enqueued(forever, state="completed", count=5)


def test_delayed_jobs_run_when_their_time_is_reached_in_order(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    order: list[int] = []

    @app.task(name="t.later")
    def later(n: int) -> None:
        order.append(n)

    for n, delay in ((3, 25), (1, 10), (2, 20), (4, 3600)):
        later.options(delay=delay).enqueue(test_conn, n=n)
    assert helper.run().counts == {}
    assert helper.run(advance=timedelta(seconds=30)).counts == {"completed": 3}
    assert order == [1, 2, 3]
    [last] = helper.assert_enqueued(later)
    assert last.run_at - last.created_at == timedelta(hours=1)  # untouched
    assert helper.run(delayed=True).counts == {"completed": 1}
    assert order == [1, 2, 3, 4]


def test_run_takes_only_the_queues_given(app: App, test_conn: Connection, helper: Jobs) -> None:
    app.task(name="t.a", queue="a")(lambda: None)
    app.task(name="t.b", queue="b")(lambda: None)
    app.enqueue_many(test_conn, [("t.a", {}), ("t.b", {})])
    assert helper.run(queues=["a"]).counts == {"completed": 1}
    helper.assert_enqueued("t.a", state="completed")
    helper.assert_enqueued("t.b", queue="b")


def test_nothing_escapes_the_rolled_back_transaction(
    app: App, database_url: str, observer: Connection, schema: str
) -> None:
    @app.task(name="t.chain")
    def chain(n: int) -> None:
        if n < 3:
            chain.enqueue(None, n=n + 1)

    with psycopg.connect(database_url) as test_connection:
        with Jobs(app, test_connection) as jobs:
            chain.enqueue(test_connection, n=1)
            assert jobs.run(drain=True).counts == {"completed": 3}
        test_connection.rollback()
    assert committed_jobs(observer, schema) == []
    # and once the helper is closed, enqueue(None, ...) commits through the pool again
    chain.enqueue(None, n=9)
    assert len(committed_jobs(observer, schema)) == 1


def test_async_tasks_run_inline_on_their_own_loop(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="t.fetch")
    async def fetch(url: str) -> None:
        await asyncio.sleep(0.01)
        store.enqueue(None, url=url)  # a sync enqueue, into the test's transaction

    @app.task(name="t.hang", timeout=0.2, max_attempts=1)
    async def hang() -> None:
        await asyncio.sleep(30)

    @app.task(name="t.store")
    def store(url: str) -> None: ...

    fetch.enqueue(test_conn, url="https://example.com")
    hang_id = hang.enqueue(test_conn)
    assert helper.run(drain=True).counts == {"completed": 2, "timed_out": 1}
    helper.assert_enqueued(store, args={"url": "https://example.com"}, state="completed")
    assert helper.get(hang_id).errors[0]["timed_out"] is True


# --- periodic schedules at a chosen moment -----------------------------------------------


def test_periodic_ticks_are_enqueued_as_of_the_moment_given(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.periodic(cron="0 3 * * *", args={"region": "eu"})
    @app.task(name="t.nightly")
    def nightly(region: str) -> None: ...

    three = datetime(2031, 5, 1, 3, 0, tzinfo=timezone.utc)
    [tick] = helper.enqueue_periodic(three + timedelta(minutes=5))
    assert (tick.tick, tick.missed) == (three, False)
    [job] = helper.assert_enqueued(nightly, args={"region": "eu"}, scheduled_at=three)
    assert job.run_at == three
    assert helper.enqueue_periodic(three + timedelta(hours=1)) == []  # nothing new is due
    [next_tick] = helper.enqueue_periodic(three + timedelta(days=1))
    assert next_tick.tick == three + timedelta(days=1)
    assert helper.run(until=three + timedelta(days=1)).counts == {"completed": 2}
    with pytest.raises(ValueError, match="aware datetime"):
        helper.enqueue_periodic(datetime(2031, 5, 1))


# --- the pytest plugin ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_jobs_fixture_asks_for_the_app_when_none_is_defined(tmp_path: Any) -> None:
    import subprocess
    import sys

    (tmp_path / "test_x.py").write_text("def test_x(jobs):\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "define a fixture named `pgjobs_app`" in result.stdout + result.stderr


def test_an_async_test_runs_jobs_from_a_thread(
    app: App, test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="t.ping")
    async def ping() -> None:
        await asyncio.sleep(0)

    ping.enqueue(test_conn)

    async def an_async_test() -> dict[str, int]:
        with pytest.raises(RuntimeError, match=r"await asyncio.to_thread\(jobs.run\)"):
            helper.run()
        return (await asyncio.to_thread(helper.run)).counts

    assert asyncio.run(an_async_test()) == {"completed": 1}


def test_jobs_run_on_a_connection_whose_rows_are_dicts(app: App, database_url: str) -> None:
    """The worker's statements read tuples; the test's connection keeps its dict rows."""
    ran: list[int] = []

    @app.task(name="t.record")
    def record(n: int) -> None:
        ran.append(n)

    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        with Jobs(app, conn) as jobs:
            job_id = record.enqueue(conn, n=7)
            assert jobs.run().counts == {"completed": 1}
            assert jobs.get(job_id).state == "completed"
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        conn.rollback()

    assert ran == [7]
