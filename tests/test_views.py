"""The SQL views `queue_summary` and `failing_tasks`: right numbers on a populated table,
and plans that read only the partial indexes however many finished jobs there are."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgjobs import App
from tests.helpers import ago, cancelled, completed, failed, make_job, running


def rows(observer: psycopg.Connection[Any], schema: str, view: str) -> list[dict[str, Any]]:
    with observer.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, view))
        ).fetchall()


def error(at_seconds_ago: float, text: str = "boom") -> dict[str, Any]:
    return {"attempt": 1, "at": ago(at_seconds_ago).isoformat(), "error": text, "traceback": None}


def test_queue_summary_counts_each_queue_and_shows_its_settings(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # given, in "mail": 2 waiting (the oldest for 90 s), 1 delayed, 1 running, and jobs
    # finished 10 minutes ago (1 completed, 1 failed, 1 cancelled) and 2 hours ago
    make_job(app, observer, queue="mail", run_at=ago(90))
    make_job(app, observer, queue="mail", run_at=ago(30))
    make_job(app, observer, queue="mail", run_at=ago(-600))
    make_job(app, observer, queue="mail", **running())
    make_job(app, observer, queue="mail", **completed(600))
    make_job(app, observer, queue="mail", **failed(600))
    make_job(app, observer, queue="mail", **cancelled(600))
    make_job(app, observer, queue="mail", **completed(7200))
    # and "mail" paused with a limit, "idle" limited with no jobs, "default" one waiting
    queues = sql.Identifier(schema, "queues")
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (name, paused, max_waiting) VALUES (%s, %s, %s), (%s, %s, %s)"
        ).format(queues),
        ("mail", True, 100, "idle", False, 5),
    )
    make_job(app, observer)

    summary = {row.pop("queue"): row for row in rows(observer, schema, "queue_summary")}

    oldest = summary["mail"].pop("oldest_waiting")
    assert timedelta(seconds=89) < oldest < timedelta(seconds=120)
    assert summary["mail"] == {
        "available": 2,
        "scheduled": 1,
        "running": 1,
        "completed_last_hour": 1,
        "failed_last_hour": 1,
        "cancelled_last_hour": 1,
        "paused": True,
        "max_waiting": 100,
        "max_running": None,
    }
    assert summary["idle"] == {
        "available": 0,
        "scheduled": 0,
        "running": 0,
        "completed_last_hour": 0,
        "failed_last_hour": 0,
        "cancelled_last_hour": 0,
        "oldest_waiting": None,
        "paused": False,
        "max_waiting": 5,
        "max_running": None,
    }
    assert (summary["default"]["available"], summary["default"]["paused"]) == (1, False)
    assert list(summary) == ["default", "idle", "mail"]


def test_failing_tasks_counts_the_last_hours_failures_and_retries(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # given "send": a job that failed for good 10 minutes ago after one retried attempt,
    # a job waiting for its retry, and one that succeeded after a retry
    make_job(
        app, observer, task="send", state="failed", attempts=2, max_attempts=2,
        finished_at=ago(600), errors=[error(700), error(600, "final: refused")],
    )  # fmt: skip
    make_job(app, observer, task="send", attempts=1, errors=[error(60, "timeout")])
    make_job(
        app, observer, task="send", state="completed", attempts=2,
        finished_at=ago(30), errors=[error(40, "flaky")],
    )  # fmt: skip
    # and tasks whose failures are older than an hour, or that never failed
    make_job(app, observer, task="old", **failed(7200))
    make_job(
        app, observer, task="old", attempts=1, run_at=ago(-60), errors=[error(4000)]
    )  # fmt: skip
    make_job(app, observer, task="fine", **completed(10))

    failing = rows(observer, schema, "failing_tasks")

    assert [row["task"] for row in failing] == ["send"]
    [send] = failing
    assert (send["failed_last_hour"], send["retried_last_hour"]) == (1, 3)
    assert send["last_error"] == "flaky"
    assert ago(41) < send["last_error_at"] < ago(39)


def plan(observer: psycopg.Connection[Any], schema: str, view: str) -> str:
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT * FROM {}").format(sql.Identifier(schema, view))
    row = observer.execute(query).fetchone()
    assert row is not None
    return json.dumps(row[0])


def scans_of_jobs(text: str) -> set[str]:
    """How the plan reads the jobs tables: the node types, relations and indexes of its
    scans."""
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        # Bitmap index scans name only their index; the heap scan above names the table.
        if str(node.get("Relation Name", "")).startswith("jobs") or "Index Name" in node:
            where = node.get("Index Name") or node.get("Relation Name")
            found.add(f"{node['Node Type']} {where}")
        for child in node.get("Plans", []):
            walk(child)

    for entry in json.loads(text):
        walk(entry["Plan"])
    return found


def test_views_read_only_indexes_and_never_the_old_history(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # given 100,000 jobs finished two days ago (some after failures), in the history,
    # beside a small backlog, as the statistics describe them
    day = observer.execute(
        sql.SQL("SELECT {}('completed', now() - interval '2 days')::text").format(
            sql.Identifier(schema, "jobs_history_partition")
        )
    ).fetchone()
    assert day is not None
    history, live = sql.Identifier(schema, "jobs_history"), sql.Identifier(schema, "jobs_live")
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (id, queue, task, state, attempts, run_at, finished_at, errors)"
            " SELECT -i, 'q' || (i % 5), 't' || (i % 20), 'completed', 1,"
            " now() - interval '2 days', now() - interval '2 days', CASE WHEN i % 50 = 0"
            ' THEN \'[{{"at": "2020-01-01T00:00:00+00:00", "error": "x"}}]\'::jsonb'
            " ELSE '[]'::jsonb END"
            " FROM generate_series(1, 100000) AS i"
        ).format(history)
    )
    for _ in range(20):
        make_job(app, observer, queue="q1")
    make_job(app, observer, **running())
    make_job(app, observer, **failed(60))
    observer.execute(sql.SQL("ANALYZE {}").format(history))
    observer.execute(sql.SQL("ANALYZE {}").format(live))

    summary = scans_of_jobs(plan(observer, schema, "queue_summary"))
    failing = scans_of_jobs(plan(observer, schema, "failing_tasks"))

    # then the big day of history is read through its index only, never whole (jobs_live
    # and today's partitions hold a few rows each, which the planner may read whole)
    scans = summary | failing
    old = day[0].split(".")[-1].strip('"')
    assert not [scan for scan in scans if scan.startswith("Seq Scan") and old in scan], scans
    assert any(old in scan for scan in scans if "Index" in scan), scans
