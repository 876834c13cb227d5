"""Concurrency and rate limits on real worker processes: never over a limit, the limit
reached, keys independent, no head-of-line blocking, slots back after a crash, a changed
limit applied within seconds."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from tests.helpers import StartWorker, state_counts, wait_until
from tests.limits_app import app as limits_app

LIMITS_APP = "tests.limits_app:app"
Connection = psycopg.Connection[Any]


@pytest.fixture
def lim_app(app: App, observer: Connection) -> Iterator[App]:
    """The limits test App on the test's database and schema, with its intervals table."""
    observer.execute(
        sql.SQL(
            "CREATE TABLE {} (job_id bigint, label text, started timestamptz, ended timestamptz)"
        ).format(sql.Identifier(app.schema, "intervals"))
    )
    limits_app.configure(database_url=app.database.url, schema=app.schema)
    yield limits_app
    limits_app.close()


def max_overlap(observer: Connection, schema: str, label: str | None = None) -> int:
    """The most intervals (of `label`, or all) that were open at one moment."""
    query = sql.SQL(
        """
        WITH i AS (SELECT * FROM {t} WHERE %(label)s::text IS NULL OR label = %(label)s)
        SELECT coalesce(max((SELECT count(*) FROM i AS o
                             WHERE o.started <= s.started
                               AND coalesce(o.ended, 'infinity') > s.started)), 0)
        FROM i AS s
        """
    ).format(t=sql.Identifier(schema, "intervals"))
    row = observer.execute(query, {"label": label}).fetchone()
    assert row is not None
    return int(row[0])


def all_done(url: str, schema: str, count: int) -> bool:
    return state_counts(url, schema) == {"completed": count}


def workers(start_worker: StartWorker, count: int, *args: str) -> None:
    for _ in range(count):
        start_worker("--concurrency", "4", *args, app=LIMITS_APP)


def test_a_concurrency_limit_holds_across_workers_and_is_reached(
    lim_app: App, observer: Connection, schema: str, database_url: str, start_worker: StartWorker
) -> None:
    lim_app.enqueue_many(None, [("lim.three", {})] * 18)
    workers(start_worker, 3)

    wait_until(lambda: all_done(database_url, schema, 18), timeout=30)

    assert max_overlap(observer, schema) == 3  # never 4 on 12 threads, and not fewer


def test_each_key_has_its_own_limit(
    lim_app: App, observer: Connection, schema: str, database_url: str, start_worker: StartWorker
) -> None:
    jobs = [("lim.per_account", {"account": a}) for a in ("a", "b", "c") for _ in range(4)]
    lim_app.enqueue_many(None, jobs)
    workers(start_worker, 2)

    wait_until(lambda: all_done(database_url, schema, 12), timeout=30)

    assert [max_overlap(observer, schema, a) for a in ("a", "b", "c")] == [1, 1, 1]
    assert max_overlap(observer, schema) == 3  # the keys ran side by side


def test_a_rate_limit_holds_in_every_sliding_window(
    lim_app: App, observer: Connection, schema: str, database_url: str, start_worker: StartWorker
) -> None:
    lim_app.enqueue_many(None, [("lim.rated", {})] * 25)
    workers(start_worker, 2)

    wait_until(lambda: all_done(database_url, schema, 25), timeout=30)

    jobs = sql.Identifier(schema, "jobs")
    busiest = observer.execute(
        sql.SQL(
            "SELECT max((SELECT count(*) FROM {j} AS o WHERE o.started_at >= s.started_at"
            " AND o.started_at < s.started_at + interval '1 second')) FROM {j} AS s"
        ).format(j=jobs)
    ).fetchone()
    assert busiest == (10,)  # the limit reached, never passed, in any second


def test_limited_jobs_first_in_line_hold_up_no_other_job(
    lim_app: App, observer: Connection, schema: str, database_url: str, start_worker: StartWorker
) -> None:
    # given: many jobs of a full key ahead of everything else
    blocked = [("lim.per_account", {"account": "a", "seconds": 5}, {"priority": 9})] * 200
    lim_app.enqueue_many(None, blocked)
    others = lim_app.enqueue_many(
        None,
        [("lim.per_account", {"account": "b", "seconds": 0})] * 3 + [("lim.free", {})] * 20,
    )
    workers(start_worker, 1)

    # then: the other key and the unlimited task run at once
    query = sql.SQL("SELECT count(*) FROM {} WHERE id = ANY(%s) AND state = 'completed'")
    wait_until(
        lambda: (
            observer.execute(query.format(sql.Identifier(schema, "jobs")), (others,)).fetchone()
            == (23,)
        ),
        timeout=10,
    )
    assert max_overlap(observer, schema, "a") == 1


def test_the_slot_of_a_killed_worker_comes_back_when_its_job_is_rescued(
    lim_app: App, observer: Connection, schema: str, database_url: str, start_worker: StartWorker
) -> None:
    [killed] = lim_app.enqueue_many(None, [("lim.per_account", {"account": "a", "seconds": 30})])
    doomed = start_worker("--concurrency", "2", "--rescue-after", "1", app=LIMITS_APP)
    wait_until(lambda: max_overlap(observer, schema, "a") == 1)
    doomed.send(signal.SIGKILL)
    doomed.wait_exit()
    follower = lim_app.enqueue(None, "lim.per_account", {"account": "a", "seconds": 0})

    start_worker("--concurrency", "2", "--rescue-after", "1", app=LIMITS_APP)

    # the dead worker's job held the key's only slot; once it is rescued the follower
    # runs, and the rescued job runs again after it
    jobs = sql.Identifier(schema, "jobs")
    query = sql.SQL("SELECT id, state, attempts FROM {} ORDER BY id").format(jobs)
    wait_until(
        lambda: (
            observer.execute(query).fetchall()
            == [(killed, "running", 2), (follower, "completed", 1)]
        ),
        timeout=15,
    )


def test_a_changed_limit_applies_within_seconds(
    lim_app: App, observer: Connection, schema: str, database_url: str, start_worker: StartWorker
) -> None:
    lim_app.enqueue_many(None, [("lim.three", {"seconds": 0.5})] * 40)
    workers(start_worker, 2)
    wait_until(lambda: max_overlap(observer, schema) == 3)

    # a deploy declares concurrency=6 (as its workers would write it)
    observer.execute(
        sql.SQL("UPDATE {} SET concurrency = 6 WHERE task = 'lim.three'").format(
            sql.Identifier(schema, "task_limits")
        )
    )

    wait_until(lambda: max_overlap(observer, schema) == 6, timeout=5)
    wait_until(lambda: all_done(database_url, schema, 40), timeout=30)
    assert max_overlap(observer, schema) == 6


def test_a_freed_slot_is_taken_at_once_not_at_the_next_poll(
    lim_app: App, observer: Connection, schema: str, database_url: str, start_worker: StartWorker
) -> None:
    # given: a worker that polls twice a minute only, so a slot freed without a NOTIFY
    # would wait for that poll
    lim_app.enqueue_many(None, [("lim.three", {"seconds": 0.05})] * 30)

    start_worker("--concurrency", "4", "--poll-interval", "30", app=LIMITS_APP)

    # then: ten rounds of three finish in seconds (the outcome that frees a slot makes
    # the worker claim again)
    wait_until(lambda: all_done(database_url, schema, 30), timeout=15)
    assert max_overlap(observer, schema) == 3
