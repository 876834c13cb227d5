"""The dashboard in a real browser: `pgjobs web` started as a user starts it, Debian's
Chromium (headless, driven by Playwright) clicking through it as a person would.

What only a browser shows: the charts drawn (uPlot, from the page's data), the forms
posting with their CSRF token and Origin, the confirmation before an action, and a page
that follows a job's state without being reloaded (htmx re-fetching its live part).
Every page is screenshotted into the test's tmp_path; `PGJOBS_WEB_SCREENSHOTS=docs/images`
also refreshes the documentation's screenshots (docs/dashboard.md) from the tour.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from psycopg import sql

from pgjobs import App, Workflow
from pgjobs.queue_control import pause_queue
from tests.helpers import StartWorker, completed, failed, make_job, wait_for_job
from tests.helpers.browser import (
    PageWatch,
    ServerProcess,
    launch_chromium,
    new_page,
    pgjobs_web,
    screenshot,
)
from tests.helpers.readme import code_blocks, doc_section

Connection = psycopg.Connection[Any]
# The live part refreshes every 5 s; a change must show within two refreshes.
REFRESHED = 12_000  # ms
# The main pages, by the file name of their screenshot.
PAGES = {
    "overview": "/",
    "queues": "/queues",
    "jobs": "/jobs",
    "failing": "/failing",
    "workflows": "/workflows",
    "workers": "/workers",
    "schedules": "/schedules",
    "health": "/health",
}
ACTION_LABELS = re.compile(r"^\s*(Retry|Cancel|Delete|Pause|Resume|Run now)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for the whole module (each test has its own context)."""
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def dashboard(database_url: str, schema: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start `pgjobs web` on the test's schema: `dashboard(*options)`, stopped at the end."""
    servers: list[ServerProcess] = []

    def start(*options: str) -> ServerProcess:
        server = pgjobs_web(database_url, schema, *options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """`open_page(**context_options)`: a page in a context of its own (its own cookies)."""
    opened: list[Page] = []

    def open_one(**options: Any) -> Page:
        opened.append(new_page(browser, **options))
        return opened[-1]

    yield open_one
    for page in opened:
        page.context.close()


@pytest.fixture
def page(open_page: Callable[..., Page]) -> Page:
    return open_page()


def state_of(observer: Connection, schema: str, job_id: int) -> str:
    query = sql.SQL("SELECT state FROM {} WHERE id = %s").format(sql.Identifier(schema, "jobs"))
    row = observer.execute(query, (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def paused(observer: Connection, schema: str, queue: str) -> bool:
    query = sql.SQL("SELECT paused FROM {} WHERE name = %s").format(
        sql.Identifier(schema, "queues")
    )
    row = observer.execute(query, (queue,)).fetchone()
    return bool(row and row[0])


def test_the_overview_draws_its_charts(
    app: App, observer: Connection, dashboard: Callable[..., ServerProcess], page: Page,
    tmp_path: Path,
) -> None:  # fmt: skip
    # given: jobs finished over the last hour, some failed
    for minutes in (2, 5, 5, 30):
        make_job(app, observer, task="email.send", **completed(minutes * 60))
    make_job(app, observer, task="report.build", **failed(600))
    server = dashboard()
    watch = PageWatch(page)

    # when
    page.goto(server.url("/"))

    # then: uPlot drew both charts (a canvas each) from the data the server put in the page
    expect(page.locator(".plot canvas")).to_have_count(2)
    expect(page.locator(".chart figcaption").first).to_contain_text("4 completed, 1 failed")
    expect(page.locator(".count.state-failed .value")).to_have_text("1")
    screenshot(page, tmp_path, "overview")
    assert watch.problems == []


def test_the_jobs_list_filters_by_state_through_its_form(
    app: App, observer: Connection, dashboard: Callable[..., ServerProcess], page: Page,
    tmp_path: Path,
) -> None:  # fmt: skip
    # given
    done = [make_job(app, observer, task="email.send", **completed(60)) for _ in range(3)]
    lost = [make_job(app, observer, task="report.build", **failed(60)) for _ in range(2)]
    waiting = make_job(app, observer, task="image.resize")
    server = dashboard()
    watch = PageWatch(page)
    page.goto(server.url("/jobs"))
    for job_id in [*done, *lost, waiting]:
        expect(job_link(page, job_id)).to_have_count(1)

    # when
    filters = page.locator("form:has(select[name=state])")
    filters.locator("select[name=state]").select_option("failed")
    filters.locator("button[type=submit], input[type=submit]").first.click()

    # then: the filter is in the URL, and only the failed jobs are listed
    page.wait_for_url(re.compile(r"[?&]state=failed\b"))
    for job_id in lost:
        expect(job_link(page, job_id)).to_have_count(1)
    for job_id in [*done, waiting]:
        expect(job_link(page, job_id)).to_have_count(0)
    expect(page.locator("select[name=state]")).to_have_value("failed")
    screenshot(page, tmp_path, "jobs-failed")
    assert watch.problems == []


def job_link(page: Page, job_id: int) -> Any:
    return page.locator(f"#live a[href$='/jobs/{job_id}']")


def test_a_failed_job_retried_from_its_page_changes_state_without_a_reload(
    app: App, observer: Connection, schema: str, dashboard: Callable[..., ServerProcess],
    page: Page, start_worker: StartWorker, tmp_path: Path,
) -> None:  # fmt: skip
    # given: a failed job of a task the test worker runs (and completes) once retried
    job_id = make_job(app, observer, task="noop", **failed(60))
    server = dashboard()
    watch = PageWatch(page)
    page.goto(server.url("/jobs?state=failed"))
    job_link(page, job_id).first.click()
    page.wait_for_url(re.compile(rf"/jobs/{job_id}$"))
    expect(page.locator("#live")).to_contain_text("ValueError: first [boom]")
    screenshot(page, tmp_path, "job-failed")

    # when: Retry (confirmed when the page asks), then a worker starts
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#live form[method=post] button", has_text="Retry").first.click()
    expect(page.locator(".notice")).to_be_visible()
    assert state_of(observer, schema, job_id) in {"available", "running", "completed"}
    page.evaluate("window.pgjobsNotReloaded = true")
    worker = start_worker()
    wait_for_job(observer, schema, job_id, "completed", worker=worker)

    # then: the open page shows it completed, by its own refresh (the mark survives)
    expect(page.locator("#live .state").first).to_have_text("completed", timeout=REFRESHED)
    assert page.evaluate("window.pgjobsNotReloaded") is True
    screenshot(page, tmp_path, "job-completed")
    assert watch.problems == []


def test_pausing_a_queue_asks_first_then_shows_it_paused(
    app: App, observer: Connection, schema: str, dashboard: Callable[..., ServerProcess],
    page: Page, tmp_path: Path,
) -> None:  # fmt: skip
    # given
    app.enqueue(None, "email.send", {"to": "a@example.com"}, queue="mail")
    app.enqueue(None, "report.build", {}, queue="reports")
    server = dashboard()
    watch = PageWatch(page)
    page.goto(server.url("/queues"))
    row = page.locator("#live tr[data-queue=mail]")
    questions: list[str] = []

    # when: asked to confirm, the person first says no
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    row.get_by_role("button", name="Pause").click()

    # then: nothing changed
    assert questions and "mail" in questions[0]
    expect(row).not_to_have_class(re.compile(r"\bpaused\b"))
    assert not paused(observer, schema, "mail")

    # when: then yes
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Pause").click()

    # then: that queue alone is paused, and the page says so
    expect(page.locator(".notice")).to_contain_text("mail paused")
    expect(row).to_have_class(re.compile(r"\bpaused\b"))
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    expect(page.locator("#live tr[data-queue=reports]")).not_to_have_class(
        re.compile(r"\bpaused\b")
    )
    assert paused(observer, schema, "mail") and not paused(observer, schema, "reports")
    screenshot(page, tmp_path, "queues")
    assert watch.problems == []


def test_a_read_only_dashboard_shows_no_button_that_changes_anything(
    app: App, observer: Connection, schema: str, dashboard: Callable[..., ServerProcess],
    page: Page, tmp_path: Path,
) -> None:  # fmt: skip
    # given: something to act on everywhere: a failed job, a waiting one, a paused queue
    job_id = make_job(app, observer, task="report.build", **failed(60))
    app.enqueue(None, "email.send", {}, queue="mail")
    pause_queue(app, "reports")
    server = dashboard("--read-only")
    watch = PageWatch(page)

    for name, path in {**PAGES, "job": f"/jobs/{job_id}"}.items():
        # when
        page.goto(server.url(path))

        # then
        expect(page.locator("header")).to_contain_text("read-only")
        buttons = page.locator("form[method=post] button, form[method=post] [type=submit]")
        assert buttons.count() == 0, f"{path} has a button that posts"
        labels = page.locator("button, input[type=submit]").all_inner_texts()
        assert [label for label in labels if ACTION_LABELS.match(label)] == [], path
        screenshot(page, tmp_path, f"read-only-{name}")
    assert watch.problems == []


# A day of history, as a busy application leaves it: four tasks in three queues, one job
# in 23 failed for good (three error classes), ids in the order the jobs finished, more
# of them lately.
HISTORY = """
INSERT INTO {jobs} (queue, task, payload, state, attempts, max_attempts, run_at, created_at,
                    started_at, finished_at, errors, worker_id)
SELECT t.queue, t.task, jsonb_build_object('order', 'ord-' || g, 'customer', 1000 + g % 97),
       t.state, CASE t.state WHEN 'failed' THEN 3 ELSE 1 END, 3,
       t.at - t.ran - interval '1 second', t.at - t.ran - interval '1 second', t.at - t.ran,
       t.at,
       CASE t.state WHEN 'failed' THEN jsonb_build_array(jsonb_build_object(
           'attempt', 3, 'at', t.at, 'worker', 'web-1:4100', 'error', t.error,
           'traceback', 'Traceback (most recent call last):' || chr(10)
               || '  File "shop/tasks.py", line 42, in ' || t.task || chr(10) || t.error))
       ELSE '[]'::jsonb END,
       'web-1:4100'
FROM generate_series(1, 2400) AS g, LATERAL (
    SELECT (ARRAY['email.send', 'image.resize', 'report.build', 'webhook.deliver'])[1 + g % 4]
               AS task,
           (ARRAY['mail', 'default', 'reports', 'default'])[1 + g % 4] AS queue,
           CASE WHEN g % 23 = 0 THEN 'failed' ELSE 'completed' END AS state,
           (ARRAY['TimeoutError: the endpoint did not answer within 10 s',
                  'KeyError: ''customer''',
                  'ConnectionRefusedError: [Errno 111] Connection refused'])[1 + g % 3] AS error,
           now() - interval '1 day' * power(1 - g / 2400.0, 1.6) AS at,
           make_interval(secs => 0.05 + random() * random() * 3) AS ran
) AS t
"""
# Two schedules, as the workers that ran them left them: the last tick and its job.
SCHEDULES = """
INSERT INTO {schedules} (name, expression, timezone, done_until, last_tick, last_job_id)
SELECT task, expression, zone, now(), tick, (SELECT max(id) FROM {jobs} WHERE task = s.task)
FROM (VALUES ('report.build', '0 3 * * *', 'Europe/Paris', date_trunc('day', now())),
             ('email.send', '*/15 * * * *', 'UTC', date_trunc('hour', now())))
     AS s(task, expression, zone, tick)
"""


def busy_schema(app: App, observer: Connection, start_worker: StartWorker) -> dict[str, int]:
    """History, a worker running jobs now (some fail, with real tracebacks), workflows
    (one whose middle step fails), a paused queue with jobs waiting, jobs due later,
    schedules. The ids of a failed job and of the failed workflow."""
    tables = {name: sql.Identifier(app.schema, name) for name in ("jobs", "schedules")}
    observer.execute(sql.SQL(HISTORY).format(**tables))
    observer.execute(sql.SQL(SCHEDULES).format(**tables))
    pause_queue(app, "reports")
    reports = [("report.build", {"month": m}, {"queue": "reports"}) for m in range(1, 6)]
    later = [("email.send", {"to": f"u{n}@example.com"}, {"queue": "mail", "delay": 3600})
             for n in range(8)]  # fmt: skip
    app.enqueue_many(None, reports + later)
    digest = Workflow("weekly digest", app=app)  # waits: its queue is paused
    collect = digest.add("report.build", name="collect", options={"queue": "reports"})
    digest.add("email.send", name="send", after=[collect])
    digest.enqueue(None)
    uploads = Workflow("resize uploads", app=app)  # a fan-out and a fan-in, all done
    root = uploads.add("noop", name="list")
    sizes = [uploads.add("noop", name=f"resize-{n}", after=[root]) for n in range(4)]
    uploads.add("noop", name="index", after=sizes)
    uploads.enqueue(None)
    flow = Workflow("nightly import", app=app)  # its middle step fails
    fetch = flow.add("noop", name="fetch")
    parse = flow.add("always_fails", name="parse", after=[fetch], options={"max_attempts": 3})
    flow.add("noop", name="report", after=[parse])
    flow.enqueue(None)
    failing = app.enqueue(None, "always_fails", {}, max_attempts=3)
    last = app.enqueue_many(None, [("noop", {"order": f"ord-{n}"}) for n in range(40)])[-1]
    worker = start_worker("--concurrency", "4")
    ends = {failing: "failed", last: "completed", uploads.steps[-1].job_id: "completed"}
    ends[flow.steps[-1].job_id] = "cancelled"
    for job_id, state in ends.items():
        assert job_id is not None
        wait_for_job(observer, app.schema, job_id, state, worker=worker)
    assert flow.id is not None
    return {"failed": failing, "workflow": flow.id}


def test_a_tour_of_every_page_on_a_busy_schema(
    app: App, observer: Connection, start_worker: StartWorker,
    dashboard: Callable[..., ServerProcess], page: Page, tmp_path: Path,
) -> None:  # fmt: skip
    # given
    ids = busy_schema(app, observer, start_worker)
    server = dashboard()
    watch = PageWatch(page)
    tour = {
        **PAGES,
        "jobs": "/jobs?state=failed",
        "job": f"/jobs/{ids['failed']}",
        "workflow": f"/workflows/{ids['workflow']}",
    }

    for name, path in tour.items():
        # when
        response = page.goto(server.url(path))

        # then: every page answers, draws, and nothing in it fails
        assert response is not None and response.status == 200, path
        if name == "overview":
            expect(page.locator(".plot canvas")).to_have_count(2)
        screenshot(page, tmp_path, name, for_docs=True, full_page=False)
    expect(page.locator("body")).to_contain_text("nightly import")
    assert watch.problems == []


FASTAPI_EXAMPLE = code_blocks(doc_section("docs/dashboard.md", "FastAPI"), "python")[0]


@pytest.fixture
def service(tmp_path: Path, database_url: str, schema: str) -> Iterator[ServerProcess]:
    """docs/dashboard.md's FastAPI example, as written, served by uvicorn."""
    folder = tmp_path / "service"
    folder.mkdir()
    (folder / "service.py").write_text(FASTAPI_EXAMPLE)
    server = ServerProcess(
        lambda port: [sys.executable, "-m", "uvicorn", "service:api", "--port", str(port)],
        ready="/openapi.json",
        env={"PGJOBS_DATABASE_URL": database_url, "PGJOBS_SCHEMA": schema},
        cwd=folder,
    )
    yield server.start()
    server.close()


def test_the_fastapi_example_mounts_the_dashboard_behind_its_authorize(
    service: ServerProcess, open_page: Callable[..., Page], observer: Connection, schema: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    # given: a job enqueued through the service's own route
    signup = httpx.post(service.url("/signup"), params={"email": "ada@example.com"})
    job_id = signup.json()["welcome_job"]
    queues, job_page = service.url("/admin/jobs/queues"), service.url(f"/admin/jobs/jobs/{job_id}")

    # when / then: a stranger is refused
    stranger = open_page()
    response = stranger.goto(queues)
    assert response is not None and response.status == 403

    # when / then: Grace may look, and sees no button
    grace = open_page(extra_http_headers={"x-forwarded-user": "grace"})
    grace.goto(queues)
    expect(grace.locator("#live tr[data-queue=default]")).to_be_visible()
    expect(grace.locator("header")).to_contain_text("read-only")
    assert grace.locator("form[method=post] button").count() == 0

    # when / then: Ada pauses the queue, through the mounted path
    ada = open_page(extra_http_headers={"x-forwarded-user": "ada"})
    watch = PageWatch(ada)
    ada.goto(queues)
    ada.once("dialog", lambda dialog: dialog.accept())
    ada.locator("#live tr[data-queue=default]").get_by_role("button", name="Pause").click()
    expect(ada.locator(".notice")).to_contain_text("default paused")
    assert ada.url.startswith(service.url("/admin/jobs/queues"))
    assert paused(observer, schema, "default")

    # and the job's page shows its arguments redacted
    ada.goto(job_page)
    expect(ada.locator("#live")).to_contain_text("***")
    expect(ada.locator("body")).not_to_contain_text("ada@example.com")
    screenshot(ada, tmp_path, "mounted-job")
    assert watch.problems == []
