"""The worker, end to end: real `pgjobs work` processes, real signals, a real database.

Each test starts workers serving `tests/worker_app.py`, whose tasks record every run in
`<schema>.runs`, and watches the jobs table. Nothing sleeps: tests poll with
`wait_until` (or `stays_true` to show that something does not happen).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from tests.helpers import (
    StartWorker,
    job,
    job_row_locked,
    runs,
    stays_true,
    wait_for_job,
    wait_until,
)

Connection = psycopg.Connection[Any]
# Every test here runs real `pgjobs work` processes.
pytestmark = pytest.mark.slow

# The test App's retry policy: Backoff(base=0.05, factor=2, cap=0.4, jitter=0.2).
BACKOFF_BASE, BACKOFF_CAP, BACKOFF_JITTER = 0.05, 0.4, 0.2
# Retries and snoozes send no NOTIFY (only inserts do); a fast poll keeps the tests that
# wait for them quick without depending on how the worker schedules its next poll.
FAST_POLL = ("--poll-interval", "0.05")
CLAIM = '%claim_jobs"(%'  # the text of a claim, to tell it in pg_stat_activity


def labels(observer: Connection, schema: str, job_id: int | None = None) -> list[str]:
    """The labels of the recorded runs, in run order (of one job, if given)."""
    return [r["label"] for r in runs(observer, schema) if job_id in (None, r["job_id"])]


def wait_for_run(observer: Connection, schema: str, job_id: int, label: str) -> None:
    """Wait until job `job_id` recorded a run labelled `label`."""
    wait_until(
        lambda: label in labels(observer, schema, job_id),
        message=f"job {job_id} never recorded {label!r}",
    )


def count_by_state(observer: Connection, schema: str) -> Counter[str]:
    query = sql.SQL("SELECT state, count(*) FROM {} GROUP BY state").format(
        sql.Identifier(schema, "jobs")
    )
    return Counter(dict(observer.execute(query).fetchall()))


def test_enqueued_job_completes(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker()
    # when
    job_id = app.enqueue(None, "record", {"label": "hello"})
    # then
    done = wait_for_job(observer, app.schema, job_id, "completed", worker=worker)
    assert done["attempts"] == 1
    assert done["finished_at"] is not None
    assert done["started_at"] is not None
    assert done["worker_id"] == worker.worker_id()  # who ran it
    assert done["errors"] == []
    assert labels(observer, app.schema, job_id) == ["hello"]


def test_job_failing_twice_then_succeeding_completes_on_third_attempt(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker(*FAST_POLL)
    # when
    job_id = app.enqueue(None, "flaky", {"failures": 2})
    # then
    done = wait_for_job(observer, app.schema, job_id, "completed", worker=worker)
    assert done["attempts"] == 3
    assert [e["attempt"] for e in done["errors"]] == [1, 2]
    for number, entry in enumerate(done["errors"], start=1):
        assert set(entry) >= {"attempt", "at", "error", "traceback", "worker"}
        assert f"flaky failure on attempt {number}" in entry["error"]
        assert "RuntimeError" in entry["traceback"]
        assert entry["worker"] == worker.worker_id()
    assert [r["attempt"] for r in runs(observer, app.schema)] == [1, 2, 3]


def test_job_failing_every_attempt_ends_failed_with_one_error_per_attempt(
    app: App, observer: Connection, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker(*FAST_POLL)
    # when
    job_id = app.enqueue(None, "always_fails", max_attempts=3)
    # then
    failed = wait_for_job(observer, app.schema, job_id, "failed", worker=worker)
    assert failed["attempts"] == 3
    assert failed["finished_at"] is not None
    assert failed["worker_id"] == worker.worker_id()
    assert [e["attempt"] for e in failed["errors"]] == [1, 2, 3]
    assert all("ValueError: this task always fails" in e["error"] for e in failed["errors"])


def test_retry_waits_grow_with_each_failure_and_stay_under_the_cap(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a job failing 5 times: raw waits 0.05, 0.1, 0.2, 0.4, 0.8 -> capped at 0.4
    worker = start_worker(*FAST_POLL)
    job_id = app.enqueue(None, "flaky", {"failures": 5})
    wait_query = sql.SQL(
        "SELECT state, attempts,"
        " extract(epoch FROM run_at - (errors -> -1 ->> 'at')::timestamptz)::float8"
        " FROM {} WHERE id = %s"
    ).format(sql.Identifier(app.schema, "jobs"))
    waits: dict[int, float] = {}  # failed attempt -> run_at minus the failure's time

    # when: watching run_at each time the job waits for its retry
    def completed() -> bool:
        [(state, attempts, wait)] = observer.execute(wait_query, (job_id,)).fetchall()
        if state == "available" and attempts > 0:
            waits[attempts] = wait
        return bool(state == "completed")

    wait_until(completed, timeout=15, interval=0.005, message=worker.describe)

    # then: each wait is the policy's delay, reduced by at most the jitter, never capped over
    def bounds(attempt: int) -> tuple[float, float]:
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        return delay * (1 - BACKOFF_JITTER), delay

    assert {3, 4, 5} <= set(waits), f"retry waits not observed: {waits}"
    for attempt, wait in waits.items():
        low, high = bounds(attempt)
        assert low - 1e-6 <= wait <= high + 1e-6, (attempt, wait, waits)
    assert waits[3] < waits[4]
    assert max(waits.values()) <= BACKOFF_CAP
    # and no retry ran before its wait was over
    gaps = observer.execute(
        sql.SQL(
            "SELECT (e ->> 'attempt')::int,"
            " extract(epoch FROM r.at - (e ->> 'at')::timestamptz)::float8"
            " FROM {jobs} j, jsonb_array_elements(j.errors) e, {runs} r"
            " WHERE j.id = %s AND r.job_id = j.id AND r.attempt = (e ->> 'attempt')::int + 1"
            " ORDER BY 1"
        ).format(jobs=sql.Identifier(app.schema, "jobs"), runs=sql.Identifier(app.schema, "runs")),
        (job_id,),
    ).fetchall()
    assert [attempt for attempt, _ in gaps] == [1, 2, 3, 4, 5]
    for attempt, gap in gaps:
        assert gap >= bounds(attempt)[0], (attempt, gap)


def test_unknown_task_fails_the_attempt_naming_the_task_and_is_retried(
    app: App, observer: Connection, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker(*FAST_POLL)
    # when
    job_id = app.enqueue(None, "no.such.task", {"x": 1}, max_attempts=2)
    # then
    failed = wait_for_job(observer, app.schema, job_id, "failed", worker=worker)
    assert failed["attempts"] == 2
    assert [e["attempt"] for e in failed["errors"]] == [1, 2]
    assert all("no.such.task" in e["error"] for e in failed["errors"])


def test_higher_priority_jobs_run_first(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: jobs waiting before any worker runs
    ids = [
        app.enqueue(None, "record", {"label": f"p{priority}"}, priority=priority)
        for priority in (1, 10, 5)
    ]
    # when
    worker = start_worker("--concurrency", "1")
    # then
    for job_id in ids:
        wait_for_job(observer, app.schema, job_id, "completed", worker=worker)
    assert labels(observer, app.schema) == ["p10", "p5", "p1"]


def test_delayed_job_does_not_run_before_its_run_at(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker("--poll-interval", "0.1")
    # when
    delayed_id = app.enqueue(None, "record", {"label": "delayed"}, delay=1.5)
    immediate_id = app.enqueue(None, "record", {"label": "immediate"})
    # then
    delayed = wait_for_job(observer, app.schema, delayed_id, "completed", worker=worker)
    wait_for_job(observer, app.schema, immediate_id, "completed", worker=worker)
    ran_at = {r["label"]: r["at"] for r in runs(observer, app.schema)}
    assert (delayed["run_at"] - delayed["created_at"]).total_seconds() >= 1.5
    assert ran_at["immediate"] < delayed["run_at"], "the worker was not serving meanwhile"
    assert ran_at["delayed"] >= delayed["run_at"]


def test_idle_worker_is_woken_by_notify_not_the_poll(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a worker that polls once a minute, ready and listening
    worker = start_worker("--poll-interval", "60")
    # when
    job_id = app.enqueue(None, "record", {"label": "woken"})
    # then
    wait_for_job(observer, app.schema, job_id, "completed", timeout=3, worker=worker)


def test_weighted_queues_share_claims_by_weight(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: 200 jobs in each of a, b, c, interleaved so that arrival order favours none
    app.enqueue_many(
        None,
        [("record", {"label": queue}, {"queue": queue}) for _ in range(200) for queue in "abc"],
    )
    # when
    worker = start_worker("--queues", "a=6,b=3,c=1", "--concurrency", "2", ready=False)
    wait_until(lambda: len(runs(observer, app.schema)) >= 100, timeout=30, message=worker.describe)
    assert worker.stop() == 0
    # then: about 60/30/10; ignoring weights (33 each) or serving only a fails these
    first = Counter(r["label"] for r in runs(observer, app.schema)[:100])
    assert 45 <= first["a"] <= 75, first
    assert 16 <= first["b"] <= 44, first
    assert 2 <= first["c"] <= 20, first


def most_at_once(observer: Connection, schema: str) -> int:
    """The most tasks that were between their "started" and "finished" records at once."""
    [(peak,)] = observer.execute(
        sql.SQL(
            "WITH spans AS ("
            "  SELECT job_id, attempt, min(at) AS began, max(at) AS ended FROM {runs}"
            "  GROUP BY job_id, attempt)"
            " SELECT max((SELECT count(*) FROM spans o"
            "             WHERE o.began <= s.began AND s.began < o.ended))"
            " FROM spans s"
        ).format(runs=sql.Identifier(schema, "runs"))
    ).fetchall()
    return int(peak)


def test_worker_never_runs_more_tasks_than_its_concurrency(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    app.enqueue_many(None, [("sleep", {"seconds": 0.2})] * 20)
    # when
    worker = start_worker("--concurrency", "3", "--prefetch", "4", ready=False)
    peak_held = 0

    def all_completed() -> bool:
        nonlocal peak_held
        counts = count_by_state(observer, app.schema)
        peak_held = max(peak_held, counts["running"])
        return counts["completed"] == 20

    wait_until(all_completed, timeout=20, interval=0.005, message=worker.describe)
    # then: exactly 3 tasks ran at once at the peak, from the tasks' own records
    assert most_at_once(observer, app.schema) == 3
    # and the jobs held (running, claimed ahead, or finished and not yet written) stayed
    # within concurrency + prefetch + the outcomes of the 3 threads not yet written
    assert peak_held <= 3 + 4 + 3, f"{peak_held} jobs held with --concurrency 3 --prefetch 4"


def test_finished_job_frees_its_thread_before_its_outcome_is_written(
    app: App,
    database_url: str,
    observer: Connection,
    runs_table: str,
    start_worker: StartWorker,
) -> None:
    # given: a one-thread worker running a job, and another job waiting
    worker = start_worker("--concurrency", "1", "--prefetch", "0")
    first_id = app.enqueue(None, "sleep", {"seconds": 0.3}, priority=1)
    wait_for_run(observer, app.schema, first_id, "started")
    second_id = app.enqueue(None, "record", {"label": "second"})
    # when: the first job returns but its outcome cannot be written yet
    with job_row_locked(database_url, app.schema, first_id):
        wait_for_run(observer, app.schema, first_id, "finished")
        # then: the thread is free at once and runs the second job meanwhile
        wait_for_run(observer, app.schema, second_id, "second")
        assert job(observer, app.schema, first_id)["state"] == "running"
    # and once the row is free the first outcome is written too
    wait_for_job(observer, app.schema, first_id, "completed", worker=worker)
    wait_for_job(observer, app.schema, second_id, "completed", worker=worker)


def test_timed_out_task_keeps_its_thread_until_it_returns(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a one-thread worker running a job that times out but ignores its stop flag
    worker = start_worker("--concurrency", "1", "--prefetch", "0")
    first_id = app.enqueue(None, "ignores_timeout", priority=1, max_attempts=1)
    wait_for_run(observer, app.schema, first_id, "started")
    second_id = app.enqueue(None, "record", {"label": "second"})
    # when: the timeout is recorded while the task still runs
    wait_for_job(observer, app.schema, first_id, "failed", worker=worker)
    # then: nothing else runs while the only thread is still inside the first task
    wait_for_run(observer, app.schema, first_id, "finished")
    second = [r for r in runs(observer, app.schema) if r["job_id"] == second_id]
    first_end = [r for r in runs(observer, app.schema) if r["job_id"] == first_id][-1]
    assert all(r["at"] >= first_end["at"] for r in second)
    wait_for_job(observer, app.schema, second_id, "completed", worker=worker)


def test_sigterm_lets_a_running_job_finish(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker()
    job_id = app.enqueue(None, "sleep", {"seconds": 1.0})
    wait_for_run(observer, app.schema, job_id, "started")
    # when
    worker.send(signal.SIGTERM)
    # then
    assert worker.wait_exit(10) == 0
    done = job(observer, app.schema, job_id)
    assert done["state"] == "completed"
    assert done["attempts"] == 1
    assert labels(observer, app.schema, job_id) == ["started", "finished"]


def test_sigterm_past_the_shutdown_timeout_puts_the_job_back(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a job that ignores its stop flag for 30 s
    worker = start_worker("--shutdown-timeout", "0.5")
    job_id = app.enqueue(None, "sleep", {"seconds": 30})
    wait_for_run(observer, app.schema, job_id, "started")
    # when
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    code = worker.wait_exit(10)
    # then
    assert time.monotonic() - signalled < 5
    assert code == 0
    back = job(observer, app.schema, job_id)
    assert back["state"] == "available"
    assert back["attempts"] == 0
    assert back["worker_id"] is None
    assert back["errors"] == []


def test_second_sigterm_exits_at_once(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a worker draining a 30 s job with a minute to spare
    worker = start_worker("--shutdown-timeout", "60")
    job_id = app.enqueue(None, "sleep", {"seconds": 30})
    wait_for_run(observer, app.schema, job_id, "started")
    worker.send(signal.SIGTERM)
    wait_until(lambda: "signal received" in worker.logs(), message=worker.describe)
    # when
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    code = worker.wait_exit(10)
    # then
    assert time.monotonic() - signalled < 5
    assert code == 0
    back = job(observer, app.schema, job_id)
    assert back["state"] == "available"
    assert back["attempts"] == 0


def test_sigint_lets_a_running_job_finish_like_sigterm(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker()
    job_id = app.enqueue(None, "sleep", {"seconds": 1.0})
    wait_for_run(observer, app.schema, job_id, "started")
    # when
    worker.send(signal.SIGINT)
    # then
    assert worker.wait_exit(10) == 0
    assert job(observer, app.schema, job_id)["state"] == "completed"
    assert labels(observer, app.schema, job_id) == ["started", "finished"]


def test_timed_out_attempt_is_recorded_as_timed_out_and_its_late_result_ignored(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: `times_out` has timeout=0.3, and returns once it sees its stop flag
    worker = start_worker(*FAST_POLL)
    # when
    job_id = app.enqueue(None, "times_out", max_attempts=2)
    # then
    failed = wait_for_job(observer, app.schema, job_id, "failed", worker=worker)
    assert failed["attempts"] == 2
    assert [e["attempt"] for e in failed["errors"]] == [1, 2]
    for entry in failed["errors"]:
        assert entry["timed_out"] is True
        assert "timed out" in entry["error"]
    # and both attempts saw their stop flag, returned, and were not counted as successes
    wait_until(
        lambda: labels(observer, app.schema, job_id).count("saw stop flag") == 2,
        message=lambda: f"runs: {labels(observer, app.schema, job_id)}",
    )
    assert "no stop flag" not in labels(observer, app.schema, job_id)
    wait_until(lambda: worker.logs().count("late result ignored") == 2, message=worker.describe)
    assert job(observer, app.schema, job_id)["state"] == "failed"


def test_fail_job_fails_at_once_without_retry(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker(*FAST_POLL)
    # when
    job_id = app.enqueue(None, "fail_now", max_attempts=5)
    # then
    failed = wait_for_job(observer, app.schema, job_id, "failed", worker=worker)
    assert failed["attempts"] == 1
    assert len(failed["errors"]) == 1
    assert "no point in retrying" in failed["errors"][0]["error"]
    assert len(runs(observer, app.schema)) == 1


def test_snooze_job_reschedules_without_an_error_and_completes(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    job_id = app.enqueue(None, "snooze", {"times": 2, "delay": 0.1})
    allowed = job(observer, app.schema, job_id)["max_attempts"]
    # when
    worker = start_worker(*FAST_POLL)
    # then
    done = wait_for_job(observer, app.schema, job_id, "completed", worker=worker)
    assert done["errors"] == []
    assert done["attempts"] == 3
    assert done["max_attempts"] == allowed + 2
    assert [r["attempt"] for r in runs(observer, app.schema)] == [1, 2, 3]


def test_json_log_lines_are_objects_carrying_the_job_fields(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker("--log-format", "json", "--log-level", "DEBUG")
    job_id = app.enqueue(None, "record", {"label": "logged"}, queue="mail")
    wait_for_job(observer, app.schema, job_id, "completed", worker=worker)
    # when
    assert worker.stop() == 0
    # then
    entries = worker.json_logs()  # fails on any line that is not a JSON object
    assert all({"time", "level", "message"} <= set(entry) for entry in entries)
    [completed] = [e for e in entries if e["message"] == "job completed"]
    assert completed["job_id"] == job_id
    assert completed["task"] == "record"
    assert completed["queue"] == "mail"
    assert completed["attempt"] == 1
    assert isinstance(completed["duration"], float)
    assert completed["duration"] >= 0
    assert completed["worker_id"] == worker.worker_id()


def test_worker_ignores_queues_it_does_not_serve(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a worker on queue a only, that polls once a minute
    worker = start_worker("--queues", "a", "--poll-interval", "60")
    # (the claims that start-up and the readiness probes set off are over)
    worker.wait_quiet(CLAIM)
    quiet_since = worker.last_activity(CLAIM)
    # when
    other_id = app.enqueue(None, "record", {"label": "b"}, queue="b")
    # then: the NOTIFY for b does not make it claim (its other statements, a heartbeat
    # or start-up's last ones, may come at any time)
    stays_true(
        lambda: not worker.active_since(quiet_since, CLAIM),
        duration=1.0,
        message="the worker claimed after a NOTIFY for a queue it does not serve",
    )
    # and a job on its own queue is still picked up at once, while b's job stays put
    own_id = app.enqueue(None, "record", {"label": "a"}, queue="a")
    wait_for_job(observer, app.schema, own_id, "completed", timeout=3, worker=worker)
    other = job(observer, app.schema, other_id)
    assert other["state"] == "available"
    assert other["attempts"] == 0
    assert labels(observer, app.schema) == ["a"]


def test_arguments_not_fitting_the_signature_fail_the_attempt_naming_the_task(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given
    worker = start_worker()
    # when
    job_id = app.enqueue(None, "record", {"nope": 1}, max_attempts=1)
    # then
    failed = wait_for_job(observer, app.schema, job_id, "failed", worker=worker)
    [entry] = failed["errors"]
    assert "record" in entry["error"]
    assert "nope" in entry["error"]
    assert runs(observer, app.schema) == []


def held_by_state(observer: Connection, schema: str, ids: list[int]) -> dict[int, tuple[str, int]]:
    """{id: (state, attempts)} of these jobs."""
    query = sql.SQL("SELECT id, state, attempts FROM {} WHERE id = ANY(%s)").format(
        sql.Identifier(schema, "jobs")
    )
    return {i: (state, attempts) for i, state, attempts in observer.execute(query, [ids])}


def test_sigterm_gives_prefetched_jobs_back_at_once_with_their_attempt(
    app: App, observer: Connection, runs_table: str, start_worker: StartWorker
) -> None:
    # given: a one-thread worker that measured short jobs, so it claims ahead, busy with
    # a long job and five more claimed with it (within its one-second claim window)
    worker = start_worker("--concurrency", "1", "--prefetch", "5", "--claim-window", "1")
    wait_for_job(observer, app.schema, app.enqueue(None, "noop", {}), worker=worker)
    long_id, *waiting = app.enqueue_many(
        None,
        [("sleep", {"seconds": 2.0}, {"priority": 10})] + [("record", {"label": "ahead"})] * 5,
    )
    wait_for_run(observer, app.schema, long_id, "started")
    assert all(s == ("running", 1) for s in held_by_state(observer, app.schema, waiting).values())
    # when
    worker.send(signal.SIGTERM)
    # then: they are back well before the running job ends, as if never claimed
    wait_until(
        lambda: all(
            s == ("available", 0) for s in held_by_state(observer, app.schema, waiting).values()
        ),
        timeout=1.0,
        message="prefetched jobs were not given back at once",
    )
    assert "ahead" not in labels(observer, app.schema)
    assert worker.wait_exit(10) == 0
    assert job(observer, app.schema, long_id)["state"] == "completed"
