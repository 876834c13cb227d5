"""The dashboard's overview, failing, workers, schedules and health pages over HTTP
(Starlette's TestClient) against the real database: what each shows, the "run now"
action, and clear 4xx answers to bad input."""

from __future__ import annotations

import html as html_module
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from pgjobs import App
from pgjobs.data import dashboard as dashboard_data
from pgjobs.data import dashboard_ops
from pgjobs.web import create_app
from pgjobs.web.csrf import COOKIE
from pgjobs.web.dashboard import Dashboard
from pgjobs.web.server import build
from tests.helpers import StartWorker, ago, completed, failed, job, jobs, make_job, wait_until
from tests.helpers.rows import update_job

ORIGIN = {"origin": "http://testserver"}
Conn = psycopg.Connection[Any]


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def rows_of(page: str, attribute: str) -> dict[str, str]:
    """The text of each table row carrying `data-<attribute>`, by that attribute."""
    found = {}
    for key, body in re.findall(
        rf'<tr [^>]*data-{attribute}="([^"]*)"[^>]*>(.*?)</tr>', page, re.S
    ):
        text = html_module.unescape(re.sub(r"<[^>]+>", " ", body))
        found[html_module.unescape(key)] = " ".join(text.split())
    return found


def token_of(client: TestClient) -> str:
    """The CSRF token the dashboard gives this client's cookie (set by a first page)."""
    client.get("/")
    dashboard = client.app.state.dashboard  # type: ignore[attr-defined]
    return str(dashboard.tokens.token(client.cookies[COOKIE]))


def entry(error: str, at: datetime, attempt: int = 1) -> dict[str, Any]:
    """One element of a job's `errors`, as a worker writes it."""
    return {
        "attempt": attempt,
        "at": at.isoformat(),
        "error": error,
        "traceback": "Tr...",
        "worker": "w",
    }


def insert_worker(observer: Conn, schema: str, worker_id: str, **columns: Any) -> None:
    values = {"host": "box", "pid": 7, "concurrency": 4, "version": "1.0", "rescue_after": 60.0}
    values.update(columns)
    names = ["id", *values]
    observer.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, "workers"),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        ),
        [worker_id, *values.values()],
    )


# --- failing ------------------------------------------------------------------------


def test_failing_groups_failed_attempts_by_task_and_error_class_over_each_window(
    client: TestClient, app: App, observer: Conn
) -> None:
    # Failed for good 30 minutes ago, after a retried attempt two hours ago.
    make_job(
        app,
        observer,
        task="mail.send",
        **{
            **failed(30 * 60),
            "errors": [
                entry("ValueError: bad address\ndetail", ago(2 * 3600)),
                entry("ValueError: no such user", ago(30 * 60), attempt=2),
            ],
        },
    )
    # Completed at its second attempt three days ago.
    make_job(
        app,
        observer,
        task="mail.send",
        **{**completed(3 * 86400), "errors": [entry("ConnectionError: reset", ago(3 * 86400 + 5))]},
    )
    # Waiting for its retry.
    make_job(app, observer, task="report.build", errors=[entry("KeyError: 'x'", ago(600))])
    # Not failed attempts of the week: too old, and a step cancelled without running.
    make_job(
        app,
        observer,
        task="old",
        **{**failed(8 * 86400), "errors": [entry("E: x", ago(8 * 86400))]},
    )
    make_job(
        app,
        observer,
        task="step",
        state="cancelled",
        finished_at=ago(60),
        errors=[entry("cancelled: fetch failed", ago(60), attempt=0)],
    )

    page = client.get("/failing").text

    groups = rows_of(page, "task")
    assert set(groups) == {"mail.send", "report.build"}
    found = re.findall(r'data-task="([^"]+)" data-error="([^"]+)"', page)
    assert found == [
        ("mail.send", "ValueError"),
        ("report.build", "KeyError"),
        ("mail.send", "ConnectionError"),
    ]
    assert rows_of(page, "error")["ValueError"].startswith(
        "mail.send ValueError 1 1 for good 2 1 for good 2 1 for good 30m"
    )
    assert "ValueError: no such user" in rows_of(page, "error")["ValueError"]
    assert rows_of(page, "error")["KeyError"].startswith(
        "report.build KeyError 1 0 for good 1 0 for good 1 0 for good"
    )
    assert rows_of(page, "error")["ConnectionError"].startswith(
        "mail.send ConnectionError 0 0 for good 0 0 for good 1 0 for good"
    )
    assert "/jobs?state=failed&amp;task=mail.send" in page
    assert "+" not in " ".join(rows_of(page, "error").values())


def test_failing_counts_past_the_read_are_lower_bounds(
    client: TestClient, app: App, observer: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_ops, "FAILING_SCAN", 3)
    for minutes in (10, 20, 90, 180, 300):
        make_job(
            app,
            observer,
            task="sync",
            **{**failed(minutes * 60), "errors": [entry("OSError: gone", ago(minutes * 60))]},
        )

    page = client.get("/failing").text

    # The three newest jobs reach back 90 minutes: the hour is whole, the day is not.
    assert rows_of(page, "task")["sync"].startswith(
        "sync OSError 2 2 for good 3+ 3+ for good 3+ 3+ for good"
    )
    assert "every failure since" in page


def test_failing_says_when_nothing_failed(client: TestClient, app: App, observer: Conn) -> None:
    make_job(app, observer, **completed())

    assert "No attempt failed in the last 7 days." in client.get("/failing").text


# --- workers ------------------------------------------------------------------------


def test_workers_shows_a_live_worker_its_leadership_and_the_jobs_it_holds(
    client: TestClient, app: App, observer: Conn, runs_table: str, start_worker: StartWorker
) -> None:
    worker = start_worker("--concurrency", "2")
    job_id = app.enqueue(None, "sleep", {"seconds": 30, "cooperative": True})
    wait_until(lambda: job(observer, app.schema, job_id)["state"] == "running", 10)
    worker_id = job(observer, app.schema, job_id)["worker_id"]

    page = client.get("/workers").text

    shown = rows_of(page, "worker")
    assert list(shown) == [worker_id]
    assert f" {worker.pid} " in shown[worker_id]
    assert "maintenance" in leads(page)[worker_id]
    assert "1: sleep \N{MULTIPLICATION SIGN} 1" in shown[worker_id]
    assert "Live (1)" in page and "Lost (0)" in page


def leads(page: str) -> dict[str, list[str]]:
    """What each worker of the page leads, by worker id."""
    rows = re.findall(r'<tr [^>]*data-worker="([^"]*)"[^>]*>(.*?)</tr>', page, re.S)
    return {worker: re.findall(r'<span class="lead">([^<]*)</span>', row) for worker, row in rows}


def test_workers_lists_lost_workers_apart_and_the_oldest_live_ones_lead(
    client: TestClient, app: App, observer: Conn
) -> None:
    insert_worker(observer, app.schema, "old:1", started_at=ago(7200), last_heartbeat_at=ago(600))
    insert_worker(observer, app.schema, "first:2", started_at=ago(3600), duties=["retention"])
    insert_worker(observer, app.schema, "second:3", started_at=ago(60), duties=["periodic"])
    insert_worker(observer, app.schema, "third:4", started_at=ago(30), duties=["retention"])
    make_job(
        app, observer, task="resize", state="running", worker_id="old:1", heartbeat_at=ago(600)
    )

    page = client.get("/workers").text

    live, lost = page.split("<h2>Lost")
    assert list(rows_of(live, "worker")) == ["first:2", "second:3", "third:4"]
    assert list(rows_of(lost, "worker")) == ["old:1"]
    assert leads(page) == {
        "first:2": ["maintenance", "retention"],
        "second:3": ["periodic"],
        "third:4": [],
        "old:1": [],
    }
    assert "resize \N{MULTIPLICATION SIGN} 1" in rows_of(lost, "worker")["old:1"]


# --- schedules ----------------------------------------------------------------------


def insert_schedule(observer: Conn, schema: str, name: str, **columns: Any) -> None:
    values = {"expression": "*/5 * * * *", "timezone": "UTC", "done_until": ago(60), **columns}
    names = ["name", *values]
    observer.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, "schedules"),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        ),
        [name, *values.values()],
    )


def schedule_row(observer: Conn, schema: str, name: str) -> tuple[Any, ...]:
    query = sql.SQL("SELECT done_until, last_tick, last_job_id FROM {} WHERE name = %s")
    found = observer.execute(query.format(sql.Identifier(schema, "schedules")), [name])
    return tuple(found.fetchone() or ())


def test_schedules_from_the_table_alone_show_next_run_and_run_now_copies_the_last_job(
    client: TestClient, app: App, observer: Conn
) -> None:
    last = make_job(
        app, observer, task="digest", queue="reports", priority=5, max_attempts=7, **completed()
    )
    update_job(observer, app.schema, last, payload={"to": "ops"}, scheduled_at=ago(30))
    tick = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    insert_schedule(
        observer,
        app.schema,
        "digest",
        expression="every 3600s",
        done_until=tick,
        last_tick=tick,
        last_job_id=last,
    )
    before = schedule_row(observer, app.schema, "digest")

    page = client.get("/schedules").text
    row = rows_of(page, "schedule")["digest"]
    assert row.startswith("digest every 3600s stored")
    assert f"#{last} completed" in row
    assert "in " in row and "Run now" in row  # the next hour's tick is ahead

    response = client.post(
        "/schedules/run",
        data={"schedule": "digest", "csrf_token": token_of(client)},
        headers=ORIGIN,
        follow_redirects=False,
    )

    assert response.status_code == 303
    new = [j for j in jobs(observer, app.schema) if j["id"] != last]
    assert len(new) == 1
    assert (new[0]["task"], new[0]["payload"], new[0]["queue"]) == (
        "digest",
        {"to": "ops"},
        "reports",
    )
    assert (new[0]["priority"], new[0]["max_attempts"], new[0]["state"]) == (5, 7, "available")
    assert new[0]["scheduled_at"] is None and new[0]["run_at"] <= datetime.now(timezone.utc)
    assert schedule_row(observer, app.schema, "digest") == before
    assert f"job {new[0]['id']} enqueued" in client.get(response.headers["location"]).text


def test_declared_schedules_show_their_arguments_and_run_now_uses_the_declaration(
    database_url: str, app: App, observer: Conn
) -> None:
    @app.periodic(every=3600, args={"to": "team"})
    @app.task(name="digest", queue="reports", priority=3, max_attempts=2)
    def digest(to: str) -> None: ...

    dashboard = Dashboard.on(database_url, app.schema)
    dashboard.app.schedules = app.schedules  # create_app(app) gives its schedules so
    with TestClient(build(dashboard)) as client:
        row = rows_of(client.get("/schedules").text, "schedule")["digest"]
        assert row.startswith("digest every 3600s new never - in ")
        assert '{"to": "team"}' in row
        response = client.post(
            "/schedules/run",
            data={"schedule": "digest", "csrf_token": token_of(client)},
            headers=ORIGIN,
            follow_redirects=False,
        )

    assert response.status_code == 303
    [new] = jobs(observer, app.schema)
    assert (new["task"], new["payload"], new["queue"]) == ("digest", {"to": "team"}, "reports")
    assert (new["priority"], new["max_attempts"], new["scheduled_at"]) == (3, 2, None)


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        ({"schedule": "nope"}, 404, "no schedule called &#39;nope&#39;"),
        ({}, 400, "say which schedule to run"),
        ({"schedule": "fresh"}, 409, "has no job to copy"),
    ],
)
def test_run_now_refuses_what_it_cannot_run_and_enqueues_nothing(
    client: TestClient, app: App, observer: Conn, data: dict[str, str], status: int, says: str
) -> None:
    insert_schedule(observer, app.schema, "fresh")  # never ticked: no job to copy

    response = client.post(
        "/schedules/run",
        data={**data, "csrf_token": token_of(client)},
        headers=ORIGIN,
    )

    assert response.status_code == status
    assert says in response.text
    assert jobs(observer, app.schema) == []


# --- health -------------------------------------------------------------------------


def levels(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-check="([^"]+)" data-level="([^"]+)"', page))


def test_health_fails_what_is_wrong_and_says_how_to_fix_it(
    client: TestClient, app: App, observer: Conn
) -> None:
    make_job(app, observer, queue="slow", run_at=ago(20 * 60))
    make_job(app, observer, state="running", worker_id="gone:1", heartbeat_at=ago(600))
    observer.execute(
        sql.SQL("INSERT INTO {} (name, paused) VALUES ('frozen', true)").format(
            sql.Identifier(app.schema, "queues")
        )
    )

    page = client.get("/health").text

    # pgjobs doctor's checks first, then the dashboard's own two.
    assert levels(page) == {
        "server version": "ok",
        "migrations": "ok",
        "vacuum": "ok",
        "autovacuum settings": "ok",
        "bloat": "ok",
        "xmin horizon": "ok",
        "idle in transaction": "ok",
        "connections": "ok",
        "invalid indexes": "ok",
        "queue lag": "fail",
        "heartbeats": "fail",
        "notifications": "warn",  # no worker listens
        "workers": "fail",
        "paused queues": "warn",
    }
    assert list(levels(page))[-2:] == ["workers", "paused queues"]
    assert 'Health: <span class="level level-fail">fail</span>' in page
    assert "in queue slow, has waited 20m" in page
    assert "pgjobs work --app MODULE:APP --queue slow" in page
    assert "start one: pgjobs work" in page
    assert "paused: frozen" in page


def test_health_fails_a_schema_behind_the_package(
    client: TestClient, app: App, observer: Conn
) -> None:
    observer.execute(
        sql.SQL("UPDATE {} SET version_num = '0010'").format(
            sql.Identifier(app.schema, "alembic_version")
        )
    )

    page = client.get("/health").text

    assert levels(page)["migrations"] == "fail"
    assert "0011" in page  # the pending migration is named
    assert "pgjobs migrate" in page


def test_health_is_ok_with_a_worker_running(
    client: TestClient, app: App, start_worker: StartWorker
) -> None:
    start_worker()

    assert set(levels(client.get("/health").text).values()) == {"ok"}


# --- overview -----------------------------------------------------------------------


def chart_series(page: str) -> list[list[list[int | None]]]:
    return [
        json.loads(html_module.unescape(found))
        for found in re.findall(r"data-series='([^']*)'", page)
    ]


def test_overview_charts_count_finished_jobs_in_their_bins(
    client: TestClient, app: App, observer: Conn
) -> None:
    for seconds in (150, 150, 400):
        make_job(app, observer, **completed(seconds))
    make_job(app, observer, **failed(400))
    make_job(app, observer, **completed(3 * 3600))
    make_job(app, observer, **completed(2 * 86400))  # older than both charts
    make_job(app, observer, state="cancelled", finished_at=ago(100))  # neither

    page = client.get("/").text

    hour, day = chart_series(page)
    assert (len(hour[0]), len(day[0])) == (60, 96)
    assert (sum(hour[1]), sum(hour[2])) == (3, 1)  # type: ignore[arg-type]
    assert (sum(day[1]), sum(day[2])) == (4, 1)  # type: ignore[arg-type]
    minute_of = {at: n for at, n in zip(hour[0], hour[1], strict=True) if n}
    expected: dict[int, int] = {}
    for seconds in (150, 150, 400):
        at = int(ago(seconds).timestamp()) // 60 * 60
        expected[at] = expected.get(at, 0) + 1
    assert minute_of == expected
    assert "last hour, per minute: 3 completed, 1 failed" in " ".join(page.split())


def test_overview_counts_a_busy_day_over_several_views_reading_a_bounded_number_of_rows(
    client: TestClient, app: App, observer: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_data, "CHART_SCAN", 2)
    monkeypatch.setattr("pgjobs.web.pages.overview.CHART_SCAN", 2)
    for hours in (1, 2, 3, 4, 5, 6):
        make_job(app, observer, **completed(hours * 3600 + 60))

    first = " ".join(client.get("/").text.split())
    views = [first] + [" ".join(client.get("/").text.split()) for _ in range(6)]

    assert "still counting the" in first
    assert "last day, per 15 minutes: 6 completed" not in first
    assert "last day, per 15 minutes: 6 completed, 0 failed" in views[-1]
    assert "still counting" not in views[-1]


def test_overview_counts_a_bin_whole_even_when_it_holds_more_than_a_view_reads(
    client: TestClient, app: App, observer: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pgjobs.web.pages.overview.CHART_SCAN", 2)
    moment = (datetime.now(timezone.utc) - timedelta(hours=3)).replace(minute=5, second=0)
    for seconds in range(5):
        make_job(
            app, observer, **{**completed(), "finished_at": moment + timedelta(seconds=seconds)}
        )

    first, second, third = (" ".join(client.get("/").text.split()) for _ in range(3))

    # The first view reads two rows: up to that bin, which the second counts whole; the
    # third counts the (empty) bins before it.
    assert "still counting" in first
    assert "last day, per 15 minutes: 5 completed, 0 failed" in second
    assert "still counting" not in third


def test_overview_shows_queue_latency_and_run_times(
    client: TestClient, app: App, observer: Conn
) -> None:
    make_job(app, observer, queue="slow", run_at=ago(300))
    make_job(app, observer, queue="later", run_at=ago(-3600))
    for took in (1, 2, 3, 4, 10):
        make_job(app, observer, task="resize", **{**completed(5), "started_at": ago(took + 5)})

    page = client.get("/").text

    latency = rows_of(page, "queue")
    assert latency["slow"].startswith("slow 5m")
    assert latency["later"] == "later nothing due"
    assert list(latency) == ["slow", "later"]
    assert rows_of(page, "task")["resize"] == "resize 5 3.0 s 8.8 s"


def test_overview_counts_each_state(client: TestClient, app: App, observer: Conn) -> None:
    make_job(app, observer)
    make_job(app, observer, **completed())
    make_job(app, observer, **completed())
    make_job(app, observer, **failed())

    page = " ".join(re.sub(r"<[^>]+>", " ", client.get("/").text).split())

    for shown in (
        "1 available",
        "0 running",
        "0 blocked",
        "2 completed",
        "1 failed",
        "0 cancelled",
    ):
        assert shown in page
