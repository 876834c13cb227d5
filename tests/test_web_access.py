"""Who may see the dashboard and who may act, enforced by the server on every route:
HTTP Basic, the `authorize` callback, read-only, the CSRF token and Origin check; the
`pgjobs web` command's refusals and a real server; the dashboard mounted in FastAPI."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg import sql
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pgjobs import App
from pgjobs.web import create_app
from pgjobs.web.csrf import COOKIE
from pgjobs.workflows import Workflow
from tests.helpers import (
    REPO_ROOT,
    ago,
    completed,
    failed,
    make_job,
    pgjobs,
    the_error_line,
    wait_until,
)
from tests.helpers.cli import INHERITED

ORIGIN = {"origin": "http://testserver"}
Conn = psycopg.Connection[Any]
CREDENTIALS = ("admin", "s3cret")


@pytest.fixture
def ids(app: App, observer: Conn) -> dict[str, Any]:
    """Something for every page and action to show or change: jobs, a workflow, a
    schedule that has run."""
    lost = make_job(app, observer, task="mail.send", **failed())
    make_job(app, observer, task="mail.send", **completed())
    waiting = make_job(app, observer, task="report.build")
    flow = Workflow("nightly", app=app)
    flow.add("fetch", name="fetch")
    flow.enqueue(None)
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (name, expression, timezone, done_until, last_tick, last_job_id)"
            " VALUES ('mail.send', 'every 60s', 'UTC', now(), now(), %s)"
        ).format(sql.Identifier(app.schema, "schedules")),
        [lost],
    )
    return {"job_id": lost, "waiting": waiting, "workflow_id": flow.id, "name": "default"}


def routes_of(web: Starlette, method: str, ids: dict[str, Any]) -> list[str]:
    """Every route of the dashboard answering `method`, its parameters filled in."""
    found = []
    for route in web.routes:
        if method in (getattr(route, "methods", None) or ()):
            found.append(route.path.format(**ids))
    assert found, f"no {method} route"
    return found


# The form of each action: what a person submitting it would send (besides the token).
FORMS = {
    "/jobs/retry": lambda ids: {"ids": str(ids["job_id"]), "confirm": "1"},
    "/jobs/cancel": lambda ids: {"ids": str(ids["waiting"]), "confirm": "1"},
    "/jobs/delete": lambda ids: {"ids": str(ids["job_id"]), "confirm": "1"},
    "/schedules/run": lambda ids: {"schedule": "mail.send"},
}


def form_of(path: str, ids: dict[str, Any]) -> dict[str, str]:
    return FORMS[path](ids) if path in FORMS else {}


def snapshot(observer: Conn, schema: str) -> tuple[list[Any], ...]:
    """Everything an action could change."""
    return tuple(
        observer.execute(sql.SQL(query).format(sql.Identifier(schema, table))).fetchall()
        for table, query in (
            ("jobs", "SELECT id, state, attempts, run_at, finished_at FROM {} ORDER BY id"),
            ("queues", "SELECT name, paused FROM {} ORDER BY name"),
            ("schedules", "SELECT name, done_until, last_job_id FROM {} ORDER BY name"),
            ("workflows", "SELECT id FROM {} ORDER BY id"),
        )
    )


def token_of(client: TestClient) -> str:
    """The CSRF token the dashboard gives this client's cookie (set by a first page)."""
    client.get("/")
    dashboard = client.app.state.dashboard  # type: ignore[attr-defined]
    return str(dashboard.tokens.token(client.cookies[COOKIE]))


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {encoded}"}


# --- HTTP Basic ---------------------------------------------------------------------


def test_basic_auth_asks_for_credentials_on_every_page_and_action(
    app: App, observer: Conn, ids: dict[str, Any]
) -> None:
    web = create_app(app, auth="admin:s3cret")
    before = snapshot(observer, app.schema)
    with TestClient(web) as client:
        for path in routes_of(web, "GET", ids):
            for headers in ({}, basic("admin", "wrong"), basic("root", "s3cret")):
                refused = client.get(path, headers=headers)
                assert refused.status_code == 401, path
                assert refused.headers["www-authenticate"].startswith("Basic "), path
            assert client.get(path, headers=basic(*CREDENTIALS)).status_code == 200, path
        for path in routes_of(web, "POST", ids):
            response = client.post(path, data=form_of(path, ids), headers=ORIGIN)
            assert response.status_code == 401, path

    assert snapshot(observer, app.schema) == before


# --- authorize, read-only -----------------------------------------------------------


def by_user(request: Any) -> str | None:
    return {"boss": "all", "viewer": "read"}.get(request.headers.get("x-user", ""))


def test_authorize_decides_each_request(app: App, observer: Conn, ids: dict[str, Any]) -> None:
    web = create_app(app, authorize=by_user)
    with TestClient(web) as client:
        for path in routes_of(web, "GET", ids):
            assert client.get(path).status_code == 403, path
            assert client.get(path, headers={"x-user": "viewer"}).status_code == 200, path
        boss = {"x-user": "boss"}
        assert 'method="post"' in client.get("/schedules", headers=boss).text

        token = token_of(client)
        for user, status in (("viewer", 403), ("nobody", 403), ("boss", 303)):
            response = client.post(
                "/queues/default/pause",
                data={"csrf_token": token},
                headers={**ORIGIN, "x-user": user},
                follow_redirects=False,
            )
            assert response.status_code == status, user
            paused = snapshot(observer, app.schema)[1]
            assert paused == ([("default", True)] if user == "boss" else []), user


@pytest.mark.parametrize(
    "options",
    [{"read_only": True}, {"read_only": True, "authorize": lambda r: "all"}],
    ids=["read_only", "read_only beats authorize all"],
)
def test_read_only_shows_no_action_and_refuses_every_one(
    app: App, observer: Conn, ids: dict[str, Any], options: dict[str, Any]
) -> None:
    web = create_app(app, **options)
    before = snapshot(observer, app.schema)
    with TestClient(web) as client:
        for path in routes_of(web, "GET", ids):
            page = client.get(path)
            assert page.status_code == 200, path
            assert 'method="post"' not in page.text.lower(), path
        token = token_of(client)
        for path in routes_of(web, "POST", ids):
            response = client.post(
                path, data={**form_of(path, ids), "csrf_token": token}, headers=ORIGIN
            )
            assert response.status_code == 403, path
            assert "nothing was changed" in response.text, path

    assert snapshot(observer, app.schema) == before


# --- CSRF ---------------------------------------------------------------------------

ACTIONS = ["/queues/default/pause", "/schedules/run", "/jobs/retry"]
FORGERIES = {
    "no token": lambda token, other: ({}, ORIGIN),
    "wrong token": lambda token, other: ({"csrf_token": "0" * 64}, ORIGIN),
    "another cookie's token": lambda token, other: ({"csrf_token": other}, ORIGIN),
    "foreign origin": lambda token, other: (
        {"csrf_token": token},
        {"origin": "https://evil.example"},
    ),
    "foreign referer": lambda token, other: (
        {"csrf_token": token},
        {"referer": "https://evil.example/page"},
    ),
    "no origin nor referer": lambda token, other: ({"csrf_token": token}, {}),
}


@pytest.mark.parametrize("path", ACTIONS)
@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_post_is_refused_and_changes_nothing(
    app: App, observer: Conn, ids: dict[str, Any], path: str, forgery: str
) -> None:
    web = create_app(app)
    before = snapshot(observer, app.schema)
    with TestClient(web) as client, TestClient(web) as elsewhere:
        token, other = token_of(client), token_of(elsewhere)
        assert token != other
        data, headers = FORGERIES[forgery](token, other)
        response = client.post(path, data={**form_of(path, ids), **data}, headers=headers)

        assert response.status_code == 403
        assert "Nothing was changed" in response.text
        assert snapshot(observer, app.schema) == before

        # The same POST done right goes through: the refusal was the forgery's.
        honest = client.post(
            path,
            data={**form_of(path, ids), "csrf_token": token},
            headers=ORIGIN,
            follow_redirects=False,
        )
        assert honest.status_code == 303
        assert snapshot(observer, app.schema) != before


def test_a_same_origin_referer_stands_in_for_a_missing_origin(
    app: App, observer: Conn, ids: dict[str, Any]
) -> None:
    with TestClient(create_app(app)) as client:
        response = client.post(
            "/queues/default/pause",
            data={"csrf_token": token_of(client)},
            headers={"referer": "http://testserver/queues"},
            follow_redirects=False,
        )

    assert response.status_code == 303
    assert snapshot(observer, app.schema)[1] == [("default", True)]


# --- pgjobs web ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "0.0.0.0"], "refusing to serve the dashboard on 0.0.0.0 without"),
        (["--auth", "admin"], "--auth must be USER:PASSWORD"),
        (["--auth", ":secret"], "--auth must be USER:PASSWORD"),
    ],
)
def test_pgjobs_web_refuses_an_unsafe_or_malformed_setup_in_one_line(
    database_url: str, schema: str, args: list[str], says: str
) -> None:
    result = pgjobs("web", *args, "--database-url", database_url, "--schema", schema)

    assert says in the_error_line(result)


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_pgjobs_web_serves_the_dashboard_over_http(
    database_url: str, schema: str, app: App, observer: Conn
) -> None:
    errors = [{"attempt": 1, "at": ago().isoformat(), "error": "OSError: disk full"}]
    make_job(app, observer, task="report.build", **{**failed(), "errors": errors})
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in INHERITED}
    command = [sys.executable, "-m", "pgjobs", "web", "--port", str(port), "--auth", "admin:s3cret"]
    server = subprocess.Popen(
        [*command, "--database-url", database_url, "--schema", schema],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                return httpx.get(f"{url}/", timeout=1).status_code == 401
            except httpx.TransportError:
                return False

        wait_until(answers, 20, interval=0.1)
        overview = httpx.get(f"{url}/", auth=CREDENTIALS, timeout=5)
        failing = httpx.get(f"{url}/failing", auth=CREDENTIALS, timeout=5)
    finally:
        server.terminate()
        server.wait(10)

    assert overview.status_code == 200
    assert "<h1>Overview</h1>" in overview.text and schema in overview.text
    assert f'hx-get="{url}/"' in overview.text
    assert 'data-task="report.build"' in failing.text


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A database of its own on the test server (no pgjobs schema in it), dropped after."""
    name = f"pgjobs_web_{os.getpid()}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(database_url, dbname=name)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.slow
def test_bare_pgjobs_web_shows_the_demos_jobs_where_the_default_schema_is_not_migrated(
    fresh_database: str,
) -> None:
    migrated = pgjobs("migrate", "--database-url", fresh_database, "--schema", "pgjobs_demo")
    assert migrated.returncode == 0, migrated.stderr
    demo = App(fresh_database, schema="pgjobs_demo")
    demo.enqueue(None, "demo.shown", {})
    demo.close()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in INHERITED}
    server = subprocess.Popen(
        [sys.executable, "-m", "pgjobs", "web", "--port", str(port)],
        cwd=REPO_ROOT,
        env={**env, "PGJOBS_DATABASE_URL": fresh_database},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answers() -> bool:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 20, interval=0.1)
        queues = httpx.get(f"http://127.0.0.1:{port}/queues", timeout=5).text
    finally:
        server.terminate()
        server.wait(10)
        said = server.stderr.read() if server.stderr else ""

    assert "the schema pgjobs is not migrated: showing pgjobs_demo" in said
    assert "pgjobs_demo" in queues and 'data-queue="default"' in queues


def test_bare_pgjobs_web_says_what_to_do_where_no_schema_is_migrated(
    fresh_database: str,
) -> None:
    result = pgjobs("web", "--database-url", fresh_database)

    line = the_error_line(result)
    assert "the schema pgjobs is not migrated: run `pgjobs migrate`, or `pgjobs demo`" in line


# --- mounted in FastAPI -------------------------------------------------------------


@pytest.fixture
def mounted(app: App) -> Iterator[TestClient]:
    """The dashboard at /jobs of a FastAPI application, for the users it authorizes."""
    dashboard = create_app(app, authorize=lambda request: "all")
    api = FastAPI()
    api.mount("/jobs", dashboard)
    with TestClient(api) as client:
        yield client
    dashboard.state.dashboard.app.close()  # a mounted app's lifespan is its host's


def test_mounted_in_fastapi_every_link_stays_under_the_prefix(
    mounted: TestClient, ids: dict[str, Any]
) -> None:
    for path in ("/jobs/", "/jobs/queues", "/jobs/failing", "/jobs/schedules", "/jobs/health"):
        page = mounted.get(path)
        assert page.status_code == 200, path
        urls = re.findall(r'(?:href|src|action|hx-get)="([^"]+)"', page.text)
        assert urls, path
        for url in urls:
            if url != "data:,":  # the empty favicon
                assert url.startswith(("/jobs/", "http://testserver/jobs/")), (path, url)
    assert mounted.get("/jobs/static/pgjobs.css").status_code == 200


def test_mounted_in_fastapi_the_csrf_cookie_and_an_action_work_under_the_prefix(
    mounted: TestClient, app: App, observer: Conn, ids: dict[str, Any]
) -> None:
    page = mounted.get("/jobs/schedules")
    assert "path=/jobs/" in page.headers["set-cookie"].lower()
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert token is not None

    response = mounted.post(
        "/jobs/queues/default/pause",
        data={"csrf_token": token.group(1)},
        headers=ORIGIN,
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert response.headers["location"].startswith("/jobs/queues")
    assert snapshot(observer, app.schema)[1] == [("default", True)]
