"""Limits by hand and on view: `pgjobs queue limit --max-running`, `pgjobs queues`' limit
columns and `pgjobs limits` (task limits, queue max_running, and their use).

The worker's side (claims that respect the limits, `limit_buckets`, `rate_starts`) is
tested elsewhere; here the rows a worker would write are written directly.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.bounds import INT_MAX
from pgjobs.data.inspect import CONCURRENCY_USE, QUEUE_RUNNING_LIMITS, RATE_USE
from pgjobs.data.sql import notify_channel
from pgjobs.errors import ConfigurationError
from pgjobs.queue_control import (
    UNCHANGED,
    BucketUse,
    LimitUse,
    list_limits,
    queue_overview,
    set_queue_limit,
)
from tests.helpers import make_job, run_cli, running

Capsys = pytest.CaptureFixture[str]
RUNNING_OR_WINDOW_INDEXES = ("jobs_running_idx", "jobs_limit_buckets_idx", "rate_starts_until_idx")


def settings(app: App) -> dict[str, tuple[int | None, int | None]]:
    """{queue: (max_waiting, max_running)} as `queue_overview` reads them."""
    return {q.stats.queue: (q.max_waiting, q.max_running) for q in queue_overview(app)}


def add_task_limit(
    observer: psycopg.Connection[Any], schema: str, task: str, **limits: Any
) -> None:
    columns = ["task", *limits]
    observer.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, "task_limits"),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        ),
        [task, *limits.values()],
    )


def holding(app: App, observer: psycopg.Connection[Any], *buckets: str, **columns: Any) -> int:
    """A running job holding `buckets`, as a worker's claim would have made it."""
    return make_job(app, observer, **running(), limit_buckets=list(buckets), **columns)


def started(
    observer: psycopg.Connection[Any], schema: str, bucket: str, period: float, *ago: float
) -> None:
    """Starts in `bucket` of a task limited to a number per `period` seconds, that many
    seconds ago each, as a claim logs them."""
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (bucket, at, until)"
            " SELECT %(bucket)s, now() - make_interval(secs => s),"
            "        now() - make_interval(secs => s) + make_interval(secs => %(period)s)"
            " FROM unnest(%(ago)s::float8[]) AS s"
        ).format(sql.Identifier(schema, "rate_starts")),
        {"bucket": bucket, "period": period, "ago": [float(s) for s in ago]},
    )


# set_queue_limit


def test_each_limit_is_set_alone_and_the_other_left_as_it_is(app: App) -> None:
    set_queue_limit(app, "mail", 100)  # positional max_waiting, as before
    set_queue_limit(app, "mail", max_running=3)
    assert settings(app)["mail"] == (100, 3)

    set_queue_limit(app, "mail", None)
    assert settings(app)["mail"] == (None, 3)

    set_queue_limit(app, "mail", 7, max_running=UNCHANGED)
    set_queue_limit(app, "mail", max_waiting=UNCHANGED, max_running=None)
    assert settings(app)["mail"] == (7, None)

    set_queue_limit(app, "sms", max_waiting=0, max_running=INT_MAX)
    assert settings(app)["sms"] == (0, INT_MAX)


@pytest.mark.parametrize("value", [0, -1, INT_MAX + 1, True, 2.0, "3"])
def test_a_bad_max_running_is_refused_and_nothing_is_written(app: App, value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_running must be an integer from 1 to"):
        set_queue_limit(app, "mail", 5, max_running=value)
    with pytest.raises(ValueError):  # a ConfigurationError is a ValueError
        set_queue_limit(app, "mail", max_running=value)

    assert settings(app) == {}


def test_a_limit_must_be_given(app: App) -> None:
    with pytest.raises(ConfigurationError, match="give max_waiting, max_running or both"):
        set_queue_limit(app, "mail")


def test_a_new_max_running_wakes_the_queues_workers(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    observer.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(schema))))
    set_queue_limit(app, "mail", 10)
    assert list(observer.notifies(timeout=0.2)) == []

    set_queue_limit(app, "mail", max_running=2)

    [notify] = list(observer.notifies(timeout=2, stop_after=1))
    assert notify.payload == "mail"


# pgjobs queue limit


def test_limit_sets_max_running_max_waiting_or_both(
    app: App, capsys: Capsys, database_url: str, schema: str
) -> None:
    running_only = run_cli(
        capsys, database_url, schema, "queue", "limit", "mail", "--max-running", "3"
    )
    assert (running_only.code, running_only.out) == (
        0,
        "queue 'mail' runs at most 3 jobs at once\n",
    )
    waiting_only = run_cli(
        capsys, database_url, schema, "queue", "limit", "mail", "--max-waiting", "50"
    )
    assert waiting_only.code == 0, waiting_only.err
    assert settings(app)["mail"] == (50, 3)

    both = run_cli(
        capsys, database_url, schema,
        "queue", "limit", "mail", "--max-running", "4", "--max-waiting", "60",
    )  # fmt: skip
    assert (both.code, both.out) == (
        0,
        "queue 'mail' accepts jobs while fewer than 60 wait\n"
        "queue 'mail' runs at most 4 jobs at once\n",
    )
    assert settings(app)["mail"] == (60, 4)

    removed = run_cli(capsys, database_url, schema, "queue", "limit", "mail", "--none")
    assert (removed.code, removed.out) == (0, "queue 'mail' has no limit\n")
    assert settings(app)["mail"] == (None, None)


@pytest.mark.parametrize("value", ["0", "-1", str(INT_MAX + 1)])
def test_limit_refuses_a_bad_max_running_in_one_line(
    app: App, capsys: Capsys, database_url: str, schema: str, value: str
) -> None:
    result = run_cli(
        capsys, database_url, schema,
        "queue", "limit", "mail", "--max-waiting", "5", "--max-running", value,
    )  # fmt: skip

    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"pgjobs: error: max_running must be an integer from 1 to {INT_MAX}, got {value}\n"
    )
    assert settings(app) == {}  # nor the good max_waiting


def test_limit_wants_a_number_or_none_not_both(
    capsys: Capsys, database_url: str, schema: str
) -> None:
    with_none = run_cli(
        capsys, database_url, schema, "queue", "limit", "mail", "--max-running", "3", "--none"
    )
    not_a_number = run_cli(
        capsys, database_url, schema, "queue", "limit", "mail", "--max-running", "many"
    )

    assert with_none.code == 1
    assert with_none.err == (
        "pgjobs: error: give --max-waiting N, --max-running N (or both), or --none\n"
    )
    assert not_a_number.code == 2
    assert len(not_a_number.err.splitlines()) == 1, not_a_number.err
    assert "'--max-running': 'many' is not a valid int" in not_a_number.err


# pgjobs queues


def test_queues_shows_max_running_beside_max_waiting(
    app: App, observer: psycopg.Connection[Any], capsys: Capsys, database_url: str, schema: str
) -> None:
    holding(app, observer, "q:mail", queue="mail")
    app.enqueue(None, "t", {}, queue="mail")
    set_queue_limit(app, "mail", max_running=2)
    set_queue_limit(app, "sms", 10)

    table = run_cli(capsys, database_url, schema, "queues")
    as_json = run_cli(capsys, database_url, schema, "queues", "--json")

    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split()[:8] == [
        "queue", "paused", "max", "waiting", "max", "running", "available", "running",
    ]  # fmt: skip
    assert lines[2].split()[:6] == ["mail", "-", "-", "2", "1", "1"]
    assert lines[3].split()[:6] == ["sms", "-", "10", "-", "0", "0"]
    found = {queue["queue"]: queue for queue in json.loads(as_json.out)}
    assert (found["mail"]["max_waiting"], found["mail"]["max_running"]) == (None, 2)
    assert (found["sms"]["max_waiting"], found["sms"]["max_running"]) == (10, None)
    assert found["mail"]["counts"]["running"] == 1


# pgjobs limits


def test_limits_says_when_there_are_none(capsys: Capsys, database_url: str, schema: str) -> None:
    table = run_cli(capsys, database_url, schema, "limits")
    as_json = run_cli(capsys, database_url, schema, "limits", "--json")

    assert (table.code, table.out) == (0, f"no limits in schema {schema!r}\n")
    assert json.loads(as_json.out) == {"tasks": [], "queues": []}


def test_limits_lists_every_limit_with_its_use(
    app: App, observer: psycopg.Connection[Any], capsys: Capsys, database_url: str, schema: str
) -> None:
    add_task_limit(observer, schema, "report.build", concurrency=2)
    add_task_limit(observer, schema, "email.send", concurrency=1, concurrency_key="account")
    add_task_limit(observer, schema, "api.call", rate_count=100, rate_period=60.0)
    add_task_limit(
        observer,
        schema,
        "api.fetch",
        concurrency=3,
        rate_count=5,
        rate_period=60.0,
        rate_key="host",
    )
    set_queue_limit(app, "mail", max_running=4)
    set_queue_limit(app, "idle", max_running=1)
    holding(app, observer, "c:report.build", task="report.build")
    holding(app, observer, "c:email.send:42", "q:mail", task="email.send", queue="mail")
    holding(app, observer, "c:email.send:7", task="email.send")
    make_job(app, observer, task="email.send", limit_buckets=["c:email.send:8"])  # not running
    started(observer, schema, "r:api.call", 60, 1, 2, 30, 50, 61, 3600)  # 4 in the minute
    started(observer, schema, "r:api.fetch:a.example", 60, 1, 2, 100)
    started(observer, schema, "r:api.fetch:b.example", 60, 3)
    started(observer, schema, "r:api.fetch:c.example", 60, 120)  # none in the minute

    table = run_cli(capsys, database_url, schema, "limits")
    as_json = run_cli(capsys, database_url, schema, "limits", "--json")

    assert table.code == 0, table.err
    rows = [line.split("  ") for line in table.out.splitlines()]
    cells = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert cells[0] == ["task", "limit", "max", "key", "in use", "updated"]
    assert [row[:5] for row in cells[2:9]] == [
        ["api.call", "rate", "100/m", "-", "4"],
        ["api.fetch", "concurrency", "3", "-", "0"],
        ["api.fetch", "rate", "5/m per host", "a.example", "2"],
        ["b.example", "1"],
        ["email.send", "concurrency", "1 per account", "42", "1"],
        ["7", "1"],
        ["report.build", "concurrency", "2", "-", "1"],
    ]
    assert cells[2][5].endswith(" ago")
    assert cells[9] == []
    assert cells[10] == ["queue", "max running", "running", "updated"]
    assert [row[:3] for row in cells[12:]] == [["idle", "1", "0"], ["mail", "4", "1"]]

    found = json.loads(as_json.out)
    tasks = {task["task"]: task for task in found["tasks"]}
    assert list(tasks) == ["api.call", "api.fetch", "email.send", "report.build"]
    assert tasks["email.send"]["concurrency_key"] == "account"
    assert tasks["email.send"]["starts"] is None
    assert tasks["email.send"]["running"] == {
        "total": 2,
        "buckets": 2,
        "top": [
            {"bucket": "c:email.send:42", "key": "42", "count": 1},
            {"bucket": "c:email.send:7", "key": "7", "count": 1},
        ],
    }
    assert tasks["api.call"]["running"] is None
    assert (tasks["api.call"]["rate_count"], tasks["api.call"]["rate_period_seconds"]) == (100, 60)
    assert tasks["api.call"]["starts"] == {
        "total": 4,
        "buckets": 1,
        "top": [{"bucket": "r:api.call", "key": None, "count": 4}],
    }
    assert tasks["api.fetch"]["running"] == {"total": 0, "buckets": 0, "top": []}
    assert tasks["api.fetch"]["starts"]["total"] == 3
    assert [queue["queue"] for queue in found["queues"]] == ["idle", "mail"]
    assert found["queues"][1]["running"] == 1
    assert found["queues"][1]["max_running"] == 4


def test_a_limit_counts_only_its_own_tasks_buckets(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # "a" keys its limit, "ab" does not: "ab" and "abc" share a's prefix, not its buckets,
    # and a bucket of a key "ab" no longer has is not its limit's.
    add_task_limit(observer, schema, "a", concurrency=1, concurrency_key="k")
    add_task_limit(observer, schema, "ab", concurrency=1)
    holding(app, observer, "c:a:x", task="a")
    holding(app, observer, "c:ab", task="ab")
    holding(app, observer, "c:ab:y", task="ab")  # keyed by a former limit: not counted
    holding(app, observer, "c:abc", task="abc")

    found = {task.task: task.running for task in list_limits(app).tasks}

    assert found == {
        "a": LimitUse((BucketUse("c:a:x", "x", 1),), 1, 1),
        "ab": LimitUse((BucketUse("c:ab", None, 1),), 1, 1),
    }


def test_limits_shows_the_most_used_buckets_and_counts_the_rest(
    app: App, observer: psycopg.Connection[Any], capsys: Capsys, database_url: str, schema: str
) -> None:
    add_task_limit(observer, schema, "sync", concurrency=5, concurrency_key="account")
    for account in range(23):
        for _ in range(3 if account == 17 else 2 if account == 4 else 1):
            holding(app, observer, f"c:sync:{account}", task="sync")

    [limit] = list_limits(app, top=2).tasks
    table = run_cli(capsys, database_url, schema, "limits")

    assert limit.running == LimitUse(
        (BucketUse("c:sync:17", "17", 3), BucketUse("c:sync:4", "4", 2)), 23, 26
    )
    lines = table.out.splitlines()
    assert len(lines) == 2 + 20 + 1
    assert lines[2].split()[:5] == ["sync", "concurrency", "5", "per", "account"]
    assert lines[2].split()[5:7] == ["17", "3"]
    assert lines[-1].split() == ["3", "more", "3"]  # 3 more buckets, 3 running jobs


def test_limits_reads_only_running_jobs_and_the_window_through_indexes(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    jobs, starts = sql.Identifier(schema, "jobs_live"), sql.Identifier(schema, "rate_starts")
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (queue, task, state, finished_at)"
            " SELECT 'mail', 'sync', 'completed', now() FROM generate_series(1, 50000)"
        ).format(jobs)
    )
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (queue, task, state, limit_buckets)"
            " SELECT 'mail', 'sync', 'running', ARRAY['c:sync:' || (g % 7), 'q:mail']"
            " FROM generate_series(1, 20) AS g"
        ).format(jobs)
    )
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (bucket, at, until)"
            " SELECT 'r:sync:' || (g % 5), now() - g * interval '1s',"
            "        now() + CASE WHEN g < 60 THEN interval '1 hour' ELSE -interval '1 hour' END"
            " FROM generate_series(1, 50000) AS g"
        ).format(starts)
    )
    add_task_limit(
        observer, schema, "sync",
        concurrency=2, concurrency_key="k", rate_count=10, rate_period=60.0, rate_key="k",
    )  # fmt: skip
    set_queue_limit(app, "mail", max_running=5)
    observer.execute(sql.SQL("ANALYZE {}").format(jobs))
    observer.execute(sql.SQL("ANALYZE {}").format(starts))

    plans = {
        name: explain(observer, app.data.sql.render(template), {"top": 20})
        for name, template in (
            ("concurrency", CONCURRENCY_USE),
            ("rate", RATE_USE),
            ("queues", QUEUE_RUNNING_LIMITS),
        )
    }

    # Jobs are read through the indexes that hold running jobs alone, the starts through
    # the `until` index: never a pass over every job or every start.
    for name, plan in plans.items():
        scans = [
            line
            for line in plan.splitlines()
            if " on jobs_live " in line or " on rate_starts " in line
        ]
        assert scans, (name, plan)
        for scan in scans:
            assert any(index in scan for index in RUNNING_OR_WINDOW_INDEXES), (name, plan)
    [limit] = list_limits(app).tasks
    assert limit.running is not None and (limit.running.buckets, limit.running.total) == (7, 20)
    assert limit.starts is not None and (limit.starts.buckets, limit.starts.total) == (5, 59)
    [queue] = list_limits(app).queues
    assert (queue.queue, queue.max_running, queue.running) == ("mail", 5, 20)


def explain(observer: psycopg.Connection[Any], query: sql.Composable, params: Any) -> str:
    rows = observer.execute(sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) ") + query, params)
    return "\n".join(row[0] for row in rows)
