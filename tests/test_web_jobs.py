"""The dashboard's jobs list, job page and workflows pages, over HTTP (Starlette's
TestClient) against the real database: what they show, what their actions change, and
every refusal."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any

import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from pgjobs import App
from pgjobs.data import dashboard_jobs
from pgjobs.web import create_app
from pgjobs.web.pages import jobs as jobs_page
from pgjobs.workflows import Workflow
from tests.helpers.rows import (
    ERRORS,
    ago,
    cancelled,
    completed,
    failed,
    job,
    job_ids,
    make_job,
    running,
    update_job,
)

ORIGIN = {"origin": "http://testserver"}
Conn = psycopg.Connection[Any]


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def shown_ids(html: str) -> list[int]:
    """The jobs of a page's table, in the order shown."""
    return [int(found) for found in re.findall(r'<tr data-job="(\d+)"', html)]


def token_of(client: TestClient, path: str = "/jobs") -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def post(client: TestClient, path: str, data: dict[str, Any], **headers: str) -> Any:
    return client.post(path, data=data, headers=headers or ORIGIN, follow_redirects=False)


def states(observer: Conn, schema: str) -> dict[int, str]:
    query = sql.SQL("SELECT id, state FROM {} ORDER BY id").format(sql.Identifier(schema, "jobs"))
    return dict(observer.execute(query).fetchall())


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return found.group(1).replace("&amp;", "&") if found else None


# --- the list -------------------------------------------------------------------------


def test_the_list_shows_the_newest_jobs_first_with_their_columns(
    client: TestClient, app: App, observer: Conn
) -> None:
    done = make_job(app, observer, task="report.build", **completed(60))
    lost = make_job(app, observer, task="mail.send", queue="email", **failed())

    html = client.get("/jobs").text

    assert shown_ids(html) == [lost, done]
    row = html[html.index(f'<tr data-job="{lost}"') :].split("</tr>")[0]
    assert f'href="/jobs/{lost}"' in row
    assert "mail.send" in row and "email" in row and "state-failed" in row
    assert "2/2" in row and "ValueError: second" in row and "ValueError: first" not in row
    assert '{"n": 1}' in unescape(row)


def test_filters_narrow_the_list(client: TestClient, app: App, observer: Conn) -> None:
    mail = make_job(app, observer, task="mail.send", queue="email", **failed())
    report = make_job(app, observer, task="report.build", **failed(3600))
    old = make_job(app, observer, task="mail.send", queue="email", **completed())
    update_job(observer, app.schema, old, created_at=ago(7200), payload={"to": "ann@x.org"})
    waiting = make_job(app, observer, task="mail.send", queue="email")

    def ids(query: str) -> set[int]:
        response = client.get(f"/jobs?{query}")
        assert response.status_code == 200, response.text
        return set(shown_ids(response.text))

    assert ids("state=failed") == {mail, report}
    assert ids("state=failed&state=available") == {mail, report, waiting}
    assert ids("queue=email") == {mail, old, waiting}
    assert ids("task=report.build") == {report}
    assert ids("queue=email&state=completed") == {old}
    assert ids("q=ann@x") == {old}  # in the arguments
    assert ids("q=valueerror: SECOND") == {mail, report}  # in the last error, any case
    assert ids("q=first") == set()  # an earlier attempt's error is not the last
    since = ago(1800).strftime("%Y-%m-%dT%H:%M:%S")
    assert ids(f"time=finished&since={since}") == {mail, old}
    assert ids(f"time=created&until={since}") == {old}
    assert ids("queue=nowhere") == set()


def test_a_text_search_takes_wildcards_literally(
    client: TestClient, app: App, observer: Conn
) -> None:
    percent = make_job(app, observer)
    update_job(observer, app.schema, percent, payload={"discount": "50%_off"})
    make_job(app, observer)

    assert shown_ids(client.get("/jobs?q=%25").text) == [percent]
    assert shown_ids(client.get("/jobs?q=0%25_o").text) == [percent]
    assert shown_ids(client.get("/jobs?q=_").text) == [percent]


def insert_jobs(observer: Conn, schema: str, count: int) -> list[int]:
    """`count` jobs in one statement: every third failed, the others completed."""
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (task, state, finished_at) SELECT 't' || g, "
            "CASE WHEN g %% 3 = 0 THEN 'failed' ELSE 'completed' END, now() "
            "FROM generate_series(1, %s) AS g"
        ).format(sql.Identifier(schema, "jobs")),
        (count,),
    )
    return job_ids(observer, schema)


def walk(client: TestClient, url: str, rel: str) -> tuple[list[int], int]:
    """Every job shown following `rel` links from `url`, and the pages visited."""
    seen: list[int] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        html = client.get(next_url).text
        seen += shown_ids(html)
        pages += 1
        next_url = link(html, rel)
        assert pages < 100, "the links never end"
    return seen, pages


def test_pages_of_50_cover_every_job_once(client: TestClient, app: App, observer: Conn) -> None:
    ids = insert_jobs(observer, app.schema, 120)

    seen, pages = walk(client, "/jobs", "next")

    assert seen == sorted(ids, reverse=True)
    assert pages == 3


@pytest.mark.parametrize("query", ["", "state=failed"])
def test_pages_cover_every_match_once_both_ways_across_windows_and_gaps(
    client: TestClient, app: App, observer: Conn, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    # Small pages and windows, and a gap of deleted ids wider than a window.
    monkeypatch.setattr(jobs_page, "PAGE_SIZE", 4)
    monkeypatch.setattr(dashboard_jobs, "SCAN_WINDOW", 7)
    ids = insert_jobs(observer, app.schema, 60)
    gap = ids[20:45]
    observer.execute(
        sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(sql.Identifier(app.schema, "jobs")),
        (gap,),
    )
    wanted = [i for i in ids if i not in gap]
    if query:
        failed_ids = {i for i, state in states(observer, app.schema).items() if state == "failed"}
        wanted = [i for i in wanted if i in failed_ids]

    older, _ = walk(client, f"/jobs?{query}", "next")
    assert older == sorted(wanted, reverse=True)

    newer, _ = walk(client, f"/jobs?{query}&after=0", "prev")
    first_page = shown_ids(client.get(f"/jobs?{query}&after=0").text)
    assert first_page and first_page == sorted(wanted)[: len(first_page)][::-1]  # the oldest
    assert sorted(newer) == sorted(wanted) and len(newer) == len(set(newer))


def test_cursors_at_the_ends_of_bigint_show_empty_pages(
    client: TestClient, app: App, observer: Conn
) -> None:
    job_id = make_job(app, observer)

    highest = client.get("/jobs?after=9223372036854775806")
    lowest = client.get("/jobs?before=1")
    beyond = client.get("/jobs?before=9223372036854775807")

    assert highest.status_code == lowest.status_code == 200
    assert shown_ids(highest.text) == shown_ids(lowest.text) == []
    assert link(highest.text, "next") == "/jobs?before=9223372036854775807"
    assert shown_ids(beyond.text) == [job_id]


def test_a_page_that_finds_few_matches_says_which_jobs_it_looked_at(
    client: TestClient, app: App, observer: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_jobs, "SCAN_WINDOW", 10)
    ids = insert_jobs(observer, app.schema, 30)

    html = client.get("/jobs?task=t1").text

    assert shown_ids(html) == []
    assert f"Looked at jobs {ids[-1]} down to {ids[-10]}" in html
    assert link(html, "next") == f"/jobs?task=t1&before={ids[-10]}"
    assert shown_ids(client.get(f"/jobs?task=t1&before={ids[-10]}").text) == []
    assert shown_ids(client.get(f"/jobs?task=t1&before={ids[-20]}").text) == [ids[0]]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/jobs?state=bogus", 400, "unknown state 'bogus'"),
        ("/jobs?before=abc", 400, "page cursor before="),
        ("/jobs?before=99999999999999999999", 400, "page cursor before="),
        ("/jobs?before=9223372036854775808", 400, "page cursor before="),
        ("/jobs?before=0", 400, "page cursor before="),
        ("/jobs?after=-1", 400, "page cursor after="),
        ("/jobs?after=9223372036854775807", 400, "page cursor after="),
        ("/jobs?before=5&after=2", 400, "not both"),
        ("/jobs?since=yesterday", 400, "since= must be a date"),
        ("/jobs?since=2026-01-02&until=2026-01-01", 400, "ends before it starts"),
        ("/jobs?time=started&since=2026-01-01", 400, "time="),
        ("/jobs?since=0001-01-01T00:00%2B05:00", 400, "since= must be a date"),
        ("/jobs?q=a%00b", 400, "NUL"),
        ("/jobs?task=" + "x" * 201, 400, "too long"),
        ("/jobs/abc", 400, "is not a job id"),
        ("/jobs/0", 400, "is not a job id"),
        ("/jobs/9223372036854775808", 400, "is not a job id"),
        ("/jobs/123456789", 404, "no job with id 123456789"),
        ("/workflows/abc", 400, "is not a workflow id"),
        ("/workflows/424242", 404, "no workflow with id 424242"),
        ("/workflows?before=x", 400, "page cursor before="),
    ],
)
def test_bad_input_gets_a_clear_4xx_page(
    client: TestClient, path: str, status: int, message: str
) -> None:
    response = client.get(path)

    assert response.status_code == status
    assert message in unescape(response.text)
    assert "Traceback" not in response.text


# --- one job --------------------------------------------------------------------------


def test_the_job_page_shows_every_attempt_with_its_traceback(
    client: TestClient, app: App, observer: Conn
) -> None:
    job_id = make_job(app, observer, task="mail.send", queue="email", **failed())
    update_job(observer, app.schema, job_id, unique_key="mail-42", priority=7)

    html = client.get(f"/jobs/{job_id}").text

    assert f"Job {job_id} · mail.send" in html
    for attempt in ERRORS:
        assert f"Attempt {attempt['attempt']}, 2024-05-01 12:00:0" in html
        assert f"on {attempt['worker']}" in html
    assert "ValueError: first [boom]\nmore detail" in html
    assert "File &#34;t.py&#34;, line 3" in html
    assert html.index("Attempt 2") < html.index("Attempt 1")  # the last first
    assert "mail-42" in html and "<td>7</td>" in html and "2 of 2" in html
    assert '"n": 1' in unescape(html)  # the arguments
    assert ">Retry</button>" in html and "Delete…" in html and ">Cancel</button>" not in html


def test_the_job_page_shows_the_result_and_timing(
    client: TestClient, app: App, observer: Conn
) -> None:
    job_id = make_job(app, observer, **completed())
    update_job(observer, app.schema, job_id, result=psycopg.types.json.Jsonb({"rows": 12}))
    waiting = make_job(app, observer)

    html = client.get(f"/jobs/{job_id}").text

    assert "<h2>Result</h2>" in html and '"rows": 12' in unescape(html)
    assert "ran for" in html and "1.0 s" in html
    waiting_html = client.get(f"/jobs/{waiting}").text
    assert "<h2>Result</h2>" not in waiting_html
    assert ">Cancel</button>" in waiting_html and ">Retry</button>" not in waiting_html


def test_redaction_applies_wherever_arguments_appear(app: App, observer: Conn) -> None:
    job_id = make_job(app, observer, **failed())
    update_job(observer, app.schema, job_id, payload={"email": "ann@secret.org"})

    def redact(task: str, args: Any) -> Any:
        return {key: "***" for key in args}

    with TestClient(create_app(app, redact=redact)) as client:
        listing = client.get("/jobs").text
        page = client.get(f"/jobs/{job_id}").text
        search = client.get("/jobs?q=secret").text

    for html in (listing, page):
        assert "secret.org" not in html
        assert "***" in html
    assert shown_ids(search) == []  # a search cannot find what is hidden
    assert "the text search looks in errors only" in search


# --- workflows ------------------------------------------------------------------------


def make_workflow(app: App) -> tuple[int, dict[str, int]]:
    flow = Workflow("import-42", app=app)
    fetch = flow.add("fetch", name="fetch")
    parse = flow.add("parse", name="parse", after=[fetch])
    flow.add("notify", name="notify", after=[fetch], run_if="finished")
    flow.add("store", name="store", after=[parse])
    ids = flow.enqueue(None)
    assert flow.id is not None
    return flow.id, dict(zip(["fetch", "parse", "notify", "store"], ids, strict=True))


def test_the_workflows_pages_show_steps_in_dependency_order(
    client: TestClient, app: App, observer: Conn
) -> None:
    workflow_id, steps = make_workflow(app)
    update_job(observer, app.schema, steps["fetch"], **completed())

    listing = client.get("/workflows").text
    page = client.get(f"/workflows/{workflow_id}").text
    step_page = client.get(f"/jobs/{steps['parse']}").text

    row = listing[listing.index(f'<tr data-workflow="{workflow_id}"') :].split("</tr>")[0]
    assert "import-42" in row and "state-completed" in row and "state-blocked" in row
    assert shown_ids(page) == [steps["fetch"], steps["parse"], steps["notify"], steps["store"]]
    store_row = page[page.index(f'<tr data-job="{steps["store"]}"') :].split("</tr>")[0]
    assert f'href="/jobs/{steps["parse"]}">parse</a>' in store_row
    assert "(if finished)" in page
    assert f'href="/workflows/{workflow_id}"' in step_page
    assert re.search(rf"after</td><td[^>]*><a[^>]*>{steps['fetch']}</a></td><td>fetch", step_page)
    assert re.search(rf"before</td><td[^>]*><a[^>]*>{steps['store']}</a></td><td>store", step_page)


def test_workflows_are_paged_newest_first(
    client: TestClient, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgjobs.web.pages import workflows

    monkeypatch.setattr(workflows, "PAGE_SIZE", 2)
    made = [make_workflow(app)[0] for _ in range(5)]

    def walk_workflows(url: str | None, rel: str) -> list[int]:
        seen = []
        while url:
            html = client.get(url).text
            seen += [int(i) for i in re.findall(r'<tr data-workflow="(\d+)"', html)]
            url = link(html, rel)
        return seen

    assert walk_workflows("/workflows", "next") == made[::-1]
    assert sorted(walk_workflows(f"/workflows?after={made[0]}", "prev")) == made[1:]


def test_cancelling_a_workflow_cancels_its_unfinished_steps(
    client: TestClient, app: App, observer: Conn
) -> None:
    workflow_id, steps = make_workflow(app)
    update_job(observer, app.schema, steps["fetch"], **completed())
    token = token_of(client, f"/workflows/{workflow_id}")

    response = post(client, f"/workflows/{workflow_id}/cancel", {"csrf_token": token})

    assert response.status_code == 303
    assert "3+steps+cancelled" in response.headers["location"]
    after = states(observer, app.schema)
    assert after[steps["fetch"]] == "completed"
    assert {after[steps[name]] for name in ("parse", "notify", "store")} == {"cancelled"}


# --- actions --------------------------------------------------------------------------


def confirm_form(html: str) -> dict[str, Any]:
    """The fields of a confirmation page's form, as the browser would send them."""
    form = html[html.index('<form method="post"') :].split("</form>")[0]
    fields: dict[str, Any] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        fields.setdefault(name, []).append(value.replace("&amp;", "&"))
    return {name: values if len(values) > 1 else values[0] for name, values in fields.items()}


def test_retrying_a_selection_asks_first_then_retries_only_what_it_can(
    client: TestClient, app: App, observer: Conn
) -> None:
    first = make_job(app, observer, **failed())
    second = make_job(app, observer, **cancelled())
    busy = make_job(app, observer, **running())
    token = token_of(client)

    asked = post(client, "/jobs/retry", {"csrf_token": token, "ids": [first, second, busy]})

    assert asked.status_code == 200
    assert "Retry 1 failed and 1 cancelled jobs?" in asked.text
    assert "Left out: 1 running job (only failed or cancelled jobs can be retried)" in asked.text
    assert states(observer, app.schema) == {first: "failed", second: "cancelled", busy: "running"}
    fields = confirm_form(asked.text)
    assert fields["ids"] == f"{first},{second}" and fields["confirm"] == "1"

    done = post(client, "/jobs/retry", fields)

    assert done.status_code == 303
    assert "notice=2+jobs+retried" in done.headers["location"]
    assert states(observer, app.schema) == {
        first: "available",
        second: "available",
        busy: "running",
    }


def test_cancelling_a_selection_asks_first_then_cancels_the_unfinished_ones(
    client: TestClient, app: App, observer: Conn
) -> None:
    waiting = make_job(app, observer)
    busy = make_job(app, observer, **running())
    done = make_job(app, observer, **completed())
    token = token_of(client)

    asked = post(client, "/jobs/cancel", {"csrf_token": token, "ids": [waiting, busy, done]})

    assert "Cancel 1 available and 1 running jobs?" in asked.text
    assert "Left out: 1 completed job" in asked.text
    assert post(client, "/jobs/cancel", confirm_form(asked.text)).status_code == 303
    assert states(observer, app.schema) == {
        waiting: "cancelled",
        busy: "cancelled",
        done: "completed",
    }


def test_deleting_from_the_job_page_confirms_then_goes_to_the_list(
    client: TestClient, app: App, observer: Conn
) -> None:
    job_id = make_job(app, observer, **failed())
    token = token_of(client, f"/jobs/{job_id}")

    asked = post(client, "/jobs/delete", {"csrf_token": token, "ids": job_id, "back": "job"})

    assert "Delete 1 failed job?" in asked.text
    assert f'href="/jobs/{job_id}">Back, changing nothing' in asked.text
    assert job_ids(observer, app.schema) == [job_id]
    done = post(client, "/jobs/delete", confirm_form(asked.text))
    assert done.headers["location"] == "/jobs?notice=1+job+deleted"
    assert job_ids(observer, app.schema) == []


def test_an_action_goes_back_to_the_list_with_its_filters(
    client: TestClient, app: App, observer: Conn
) -> None:
    job_id = make_job(app, observer, queue="email", **failed())
    fields = {"csrf_token": token_of(client), "ids": job_id, "queue": "email", "state": "failed"}

    done = post(client, "/jobs/retry", {**fields, "confirm": "1"})

    location = done.headers["location"]
    assert location.startswith("/jobs?state=failed&queue=email&notice=")


def test_cancel_and_retry_from_the_job_page_come_back_to_it(
    client: TestClient, app: App, observer: Conn
) -> None:
    job_id = make_job(app, observer)
    token = token_of(client, f"/jobs/{job_id}")
    fields = {"csrf_token": token, "ids": job_id, "confirm": "1", "back": "job"}

    cancelled_response = post(client, "/jobs/cancel", fields)
    after_cancel = job(observer, app.schema, job_id)["state"]
    retried_response = post(client, "/jobs/retry", fields)

    assert cancelled_response.status_code == retried_response.status_code == 303
    assert cancelled_response.headers["location"].startswith(f"/jobs/{job_id}?")
    assert after_cancel == "cancelled"
    assert job(observer, app.schema, job_id)["state"] == "available"
    page = client.get(retried_response.headers["location"]).text
    assert "1 job retried" in page and "state-available" in page


def test_deleting_asks_then_deletes_finished_jobs_only(
    client: TestClient, app: App, observer: Conn
) -> None:
    done = make_job(app, observer, **completed())
    lost = make_job(app, observer, **failed())
    waiting = make_job(app, observer)
    token = token_of(client)

    asked = post(client, "/jobs/delete", {"csrf_token": token, "ids": [done, lost, waiting]})

    assert "Delete 1 completed and 1 failed jobs?" in asked.text
    assert "Left out: 1 available job (only completed, failed or cancelled" in asked.text
    assert post(client, "/jobs/delete", confirm_form(asked.text)).status_code == 303
    assert job_ids(observer, app.schema) == [waiting]


def test_deleting_a_job_that_is_not_finished_is_refused(
    client: TestClient, app: App, observer: Conn
) -> None:
    done = make_job(app, observer, **completed())
    busy = make_job(app, observer, **running())
    fields = {"csrf_token": token_of(client), "ids": f"{done},{busy}", "confirm": "1"}

    response = post(client, "/jobs/delete", fields)

    assert response.status_code == 409
    assert "Nothing was changed" in response.text and "cancel it first" in response.text
    assert job_ids(observer, app.schema) == [done, busy]


def test_a_workflows_steps_are_deleted_only_once_it_has_finished(
    client: TestClient, app: App, observer: Conn, schema: str
) -> None:
    workflow_id, steps = make_workflow(app)
    update_job(observer, schema, steps["fetch"], **completed())
    token = token_of(client)
    fields = {"csrf_token": token, "ids": steps["fetch"], "confirm": "1"}

    refused = post(client, "/jobs/delete", fields)
    asked = post(client, "/jobs/delete", {"csrf_token": token, "ids": steps["fetch"]})
    assert "Delete…" not in client.get(f"/jobs/{steps['fetch']}").text

    assert refused.status_code == 409 and "unfinished steps" in refused.text
    assert "Nothing to delete" in asked.text and "steps of workflows" in asked.text
    assert steps["fetch"] in job_ids(observer, schema)

    for name in ("parse", "notify", "store"):
        update_job(observer, schema, steps[name], **completed())
    everything = {"csrf_token": token, "ids": ",".join(map(str, steps.values())), "confirm": "1"}
    assert post(client, "/jobs/delete", everything).status_code == 303
    assert job_ids(observer, schema) == []
    assert client.get(f"/workflows/{workflow_id}").status_code == 404  # gone with its steps


def test_all_matching_the_filter_takes_only_the_jobs_the_action_applies_to(
    client: TestClient, app: App, observer: Conn
) -> None:
    wanted = [make_job(app, observer, queue="a", **failed()) for _ in range(3)]
    other_queue = make_job(app, observer, queue="b", **failed())
    done = make_job(app, observer, queue="a", **completed())
    token = token_of(client)

    asked = post(client, "/jobs/retry", {"csrf_token": token, "all": "1", "queue": "a"})

    assert "Retry 3 failed jobs?" in asked.text
    assert "Every job matching the filter (queue a)" in asked.text
    assert post(client, "/jobs/retry", confirm_form(asked.text)).status_code == 303
    after = states(observer, app.schema)
    assert [after[i] for i in wanted] == ["available"] * 3
    assert after[other_queue] == "failed" and after[done] == "completed"


def test_all_matching_stops_at_the_cap_and_says_so(
    client: TestClient, app: App, observer: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_page, "BULK_CAP", 2)
    made = [make_job(app, observer, **failed()) for _ in range(3)]
    token = token_of(client)

    asked = post(client, "/jobs/retry", {"csrf_token": token, "all": "1"})

    assert "Retry 2 failed jobs?" in asked.text and "the newest 2 of them" in asked.text
    assert confirm_form(asked.text)["ids"] == f"{made[2]},{made[1]}"


def test_an_action_on_nothing_or_on_too_much_is_refused(
    client: TestClient, app: App, observer: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_page, "BULK_CAP", 2)
    make_job(app, observer)
    token = token_of(client)

    nothing = post(client, "/jobs/retry", {"csrf_token": token})
    too_many = post(client, "/jobs/retry", {"csrf_token": token, "ids": "1,2,3"})
    not_an_id = post(client, "/jobs/retry", {"csrf_token": token, "ids": "1,x"})
    unknown = post(client, "/jobs/retry", {"csrf_token": token, "ids": "424242", "confirm": "1"})

    assert nothing.status_code == 400 and "no job was selected" in nothing.text
    assert too_many.status_code == 400 and "at most 2 jobs" in too_many.text
    assert not_an_id.status_code == 400 and "is not a job id" in not_an_id.text
    assert unknown.status_code == 404 and "no job with id 424242" in unknown.text


# --- refusals -------------------------------------------------------------------------


@pytest.fixture
def targets(app: App, observer: Conn) -> dict[str, int]:
    """A job for each action, and a workflow to cancel."""
    workflow_id, _ = make_workflow(app)
    return {
        "retry": make_job(app, observer, **failed()),
        "cancel": make_job(app, observer),
        "delete": make_job(app, observer, **completed()),
        "workflow": workflow_id,
    }


ACTIONS: list[tuple[str, Callable[[dict[str, int]], tuple[str, dict[str, Any]]]]] = [
    ("retry", lambda t: ("/jobs/retry", {"ids": t["retry"], "confirm": "1"})),
    ("cancel", lambda t: ("/jobs/cancel", {"ids": t["cancel"], "confirm": "1"})),
    ("delete", lambda t: ("/jobs/delete", {"ids": t["delete"], "confirm": "1"})),
    ("retry-ask", lambda t: ("/jobs/retry", {"ids": t["retry"]})),
    ("cancel-workflow", lambda t: (f"/workflows/{t['workflow']}/cancel", {})),
]


@pytest.mark.parametrize(("name", "request_of"), ACTIONS, ids=[a[0] for a in ACTIONS])
@pytest.mark.parametrize("refusal", ["no token", "wrong token", "foreign origin", "no origin"])
def test_a_forged_action_is_refused_and_changes_nothing(
    client: TestClient,
    app: App,
    observer: Conn,
    targets: dict[str, int],
    name: str,
    request_of: Callable[[dict[str, int]], tuple[str, dict[str, Any]]],
    refusal: str,
) -> None:
    before = states(observer, app.schema)
    path, data = request_of(targets)
    token = token_of(client)
    if refusal == "wrong token":
        data["csrf_token"] = "0" * len(token)
    elif refusal != "no token":
        data["csrf_token"] = token
    headers = {"foreign origin": {"origin": "https://evil.example"}, "no origin": {}}

    response = client.post(
        path, data=data, headers=headers.get(refusal, ORIGIN), follow_redirects=False
    )

    assert response.status_code == 403
    assert "Nothing was changed" in response.text
    assert states(observer, app.schema) == before


@pytest.mark.parametrize(("name", "request_of"), ACTIONS, ids=[a[0] for a in ACTIONS])
@pytest.mark.parametrize("reader", ["read_only", "authorize read"])
def test_a_reader_cannot_act_and_sees_no_action_form(
    app: App,
    observer: Conn,
    targets: dict[str, int],
    name: str,
    request_of: Callable[[dict[str, int]], tuple[str, dict[str, Any]]],
    reader: str,
) -> None:
    options: dict[str, Any] = (
        {"read_only": True} if reader == "read_only" else {"authorize": lambda r: "read"}
    )
    before = states(observer, app.schema)
    path, data = request_of(targets)
    with TestClient(create_app(app, **options)) as client:
        pages = [
            client.get(url).text
            for url in (
                "/jobs",
                f"/jobs/{targets['retry']}",
                f"/jobs/{targets['cancel']}",
                f"/jobs/{targets['delete']}",
                "/workflows",
                f"/workflows/{targets['workflow']}",
            )
        ]
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', pages[0])
        response = client.post(
            path,
            data={**data, "csrf_token": token.group(1) if token else ""},
            headers=ORIGIN,
            follow_redirects=False,
        )

    assert response.status_code == 403
    assert "read-only" in response.text
    assert states(observer, app.schema) == before
    for html in pages:
        assert 'method="post"' not in html and 'type="checkbox"' not in html
