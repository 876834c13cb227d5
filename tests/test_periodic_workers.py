"""Periodic jobs with real `pgjobs work` processes serving `tests/periodic_app.py`, whose
`every_second` task ticks once a second and records each run with its scheduled time."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.helpers import StartWorker, jobs, runs, stays_true, wait_until

PERIODIC_APP = "tests.periodic_app:app"
Connection = psycopg.Connection[Any]
# A tick is enqueued a few milliseconds after its time; on a loaded machine, allow more.
ON_TIME = timedelta(seconds=1)


def ticks(observer: Connection, schema: str) -> list[dict[str, Any]]:
    """The jobs of the every-second schedule, by scheduled time."""
    found = [job for job in jobs(observer, schema) if job["task"] == "every_second"]
    return sorted(found, key=lambda job: job["scheduled_at"])


def consecutive_seconds(times: list[datetime]) -> bool:
    return all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))


@pytest.mark.slow
def test_two_workers_enqueue_exactly_one_job_per_tick(
    start_worker: StartWorker, runs_table: str, observer: Connection
) -> None:
    # given: two workers, both enqueuing the every-second schedule
    workers = [start_worker("--concurrency", "2", app=PERIODIC_APP) for _ in range(2)]

    # when: at least six ticks pass
    wait_until(
        lambda: len(ticks(observer, runs_table)) >= 6,
        timeout=30,
        message=lambda: "\n".join(w.describe() for w in workers),
    )
    for worker in workers:
        assert worker.stop() == 0

    # then: one job per tick, none skipped, each run once, knowing its tick
    enqueued = ticks(observer, runs_table)
    times = [job["scheduled_at"] for job in enqueued]
    assert len(set(times)) == len(times)
    assert consecutive_seconds(times)
    assert all(job["created_at"] - job["scheduled_at"] < ON_TIME for job in enqueued)
    ran = {run["job_id"]: run for run in runs(observer, runs_table)}
    completed = [job for job in enqueued if job["state"] == "completed"]
    assert completed, "no periodic job ran"
    for job in completed:
        assert ran[job["id"]]["label"] == job["scheduled_at"].isoformat()
    assert len(runs(observer, runs_table)) == len(ran)  # no job ran twice


@pytest.mark.slow
def test_a_rolling_deploy_that_changes_the_schedule_keeps_enqueuing_every_tick(
    start_worker: StartWorker, runs_table: str, observer: Connection
) -> None:
    # given: the old version of the app ticks every second, the new one every two seconds,
    # and both run side by side (a rolling deploy), the old one started first
    old = start_worker("--concurrency", "2", app=PERIODIC_APP)
    new = start_worker("--concurrency", "2", app="tests.periodic_app_v2:app")
    both_running = now(observer)

    # when: six ticks pass
    wait_until(
        lambda: len(ticks_after(observer, runs_table, both_running)) >= 6,
        timeout=30,
        message=lambda: f"{old.describe()}\n{new.describe()}",
    )
    # then: the periodic leader's schedule applies: the old worker, the longest running,
    # enqueues a job every second, each tick once
    times = ticks_after(observer, runs_table, both_running)
    assert consecutive_seconds(times), times
    assert len(set(times)) == len(times)
    # when: the old worker stops, as the deploy ends
    assert old.stop() == 0
    handed_over = now(observer)
    # then: the new worker takes over at its next beat and enqueues its own ticks, once each
    wait_until(
        lambda: len(ticks_after(observer, runs_table, handed_over)) >= 2,
        timeout=30,
        message=new.describe,
    )
    later = ticks_after(observer, runs_table, handed_over)
    assert all(t.second % 2 == 0 for t in later), later
    assert len(set(later)) == len(later)
    assert new.stop() == 0


def now(observer: Connection) -> datetime:
    """The database's clock, which the ticks are compared with."""
    [(moment,)] = observer.execute("SELECT now()").fetchall()
    assert isinstance(moment, datetime)
    return moment


def ticks_after(observer: Connection, runs_table: str, moment: datetime) -> list[datetime]:
    """The ticks enqueued for times more than a second after `moment`."""
    return [
        job["scheduled_at"]
        for job in ticks(observer, runs_table)
        if job["scheduled_at"] > moment + timedelta(seconds=1)
    ]


@pytest.mark.slow
def test_restart_after_a_gap_enqueues_at_most_the_latest_missed_tick(
    start_worker: StartWorker, runs_table: str, observer: Connection
) -> None:
    # given: a worker that enqueued a few ticks, then stopped
    first = start_worker(app=PERIODIC_APP)
    wait_until(lambda: len(ticks(observer, runs_table)) >= 2, timeout=30, message=first.describe)
    assert first.stop() == 0
    before = ticks(observer, runs_table)
    last_before = before[-1]["scheduled_at"]

    # when: at least three ticks pass with no worker, then a worker starts again
    gap_ends = last_before + timedelta(seconds=3.5)
    wait_until(lambda: datetime.now(last_before.tzinfo) > gap_ends, timeout=10)
    second = start_worker(app=PERIODIC_APP)
    wait_until(
        lambda: len(ticks(observer, runs_table)) >= len(before) + 3,
        timeout=30,
        message=second.describe,
    )
    assert second.stop() == 0

    # then: of the gap's ticks only the latest was enqueued (+3 s; +4 s or later when the
    # worker came up after the next tick was due); one job per tick after it
    after = ticks(observer, runs_table)[len(before) :]
    times = [job["scheduled_at"] for job in after]
    assert times[0] - last_before >= timedelta(seconds=3)
    assert consecutive_seconds(times)
    assert all(job["created_at"] - job["scheduled_at"] < ON_TIME for job in after), [
        (job["scheduled_at"], job["created_at"]) for job in after
    ]
    assert "enqueued only the latest" in second.logs()


@pytest.mark.slow
def test_worker_with_no_periodic_enqueues_nothing(
    start_worker: StartWorker, runs_table: str, observer: Connection
) -> None:
    worker = start_worker("--no-periodic", app=PERIODIC_APP)

    stays_true(lambda: ticks(observer, runs_table) == [], duration=3.0, message=worker.describe)
    assert worker.stop() == 0
    assert ticks(observer, runs_table) == []
