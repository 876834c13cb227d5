"""The asyncio examples of `examples/`, run the way their docstrings say, as the docs show them."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.helpers import REPO_ROOT, StartWorker, jobs, wait_for_job, wait_until
from tests.helpers.readme import code_blocks, doc_section

Connection = psycopg.Connection[Any]


@pytest.fixture
def fastapi_example(
    monkeypatch: pytest.MonkeyPatch, database_url: str, schema: str
) -> Iterator[ModuleType]:
    """`examples/fastapi_app.py`, its tables in the test's schema (by `search_path`)."""
    url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("PGJOBS_SCHEMA", schema)
    # Imported afresh: it reads its settings at import, as a real service does.
    sys.modules.pop("examples.fastapi_app", None)
    yield importlib.import_module("examples.fastapi_app")
    sys.modules.pop("examples.fastapi_app", None)


def signups(observer: Connection, schema: str) -> list[str]:
    query = sql.SQL("SELECT email FROM {} ORDER BY id").format(sql.Identifier(schema, "signups"))
    return [row[0] for row in observer.execute(query).fetchall()]


def test_the_docs_show_the_fastapi_handler_as_it_is_in_the_example() -> None:
    section = doc_section("docs/asyncio.md", "Async applications")
    [handler] = [block for block in code_blocks(section, "python") if "@api.post" in block]
    example = (REPO_ROOT / "examples" / "fastapi_app.py").read_text()
    assert handler in example, "docs/asyncio.md does not show examples/fastapi_app.py's handler"


@pytest.mark.slow
def test_fastapi_example_commits_the_signup_and_its_job_together(
    fastapi_example: ModuleType,
    observer: Connection,
    schema: str,
    start_worker: StartWorker,
) -> None:
    api = fastapi_example.api

    async def requests() -> list[httpx.Response]:
        async with api.router.lifespan_context(api):
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return [
                    await client.post("/signups", json={"email": "a@example.com"}) for _ in range(2)
                ]

    # when: a signup, then the same address again (refused at the commit)
    first, again = asyncio.run(requests())
    # then: one row and one job; the refused request's job was rolled back with its row
    assert first.status_code == 201, first.text
    assert again.status_code == 409, again.text
    assert signups(observer, schema) == ["a@example.com"]
    [job] = jobs(observer, schema)
    assert job["id"] == first.json()["job_id"]
    assert (job["task"], job["queue"], job["payload"]) == (
        "mail.welcome",
        "mail",
        {"email": "a@example.com"},
    )
    # and the worker runs the async task
    worker = start_worker(app="examples.fastapi_app:jobs")
    wait_for_job(observer, schema, job["id"], "completed", timeout=20, worker=worker)


@pytest.mark.slow
def test_asyncio_script_enqueues_in_one_transaction_and_the_worker_runs_both_kinds(
    database_url: str, schema: str, observer: Connection, start_worker: StartWorker
) -> None:
    # when: the script enqueues 4 reports
    result = subprocess.run(
        [sys.executable, "examples/asyncio_script.py", "4"],
        cwd=REPO_ROOT,
        env={**os.environ, "PGJOBS_DATABASE_URL": database_url, "PGJOBS_SCHEMA": schema},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then
    assert result.returncode == 0, result.stderr
    ids = [int(word) for word in result.stdout.split()]
    assert [row["id"] for row in jobs(observer, schema)] == ids
    # and the worker runs them (async) and the archive jobs they enqueue (threads)
    worker = start_worker(app="examples.asyncio_script:app")

    def all_done() -> bool:
        rows = jobs(observer, schema)
        return len(rows) == 8 and all(row["state"] == "completed" for row in rows)

    wait_until(all_done, timeout=30, message=worker.describe)
    tasks = sorted(row["task"] for row in jobs(observer, schema))
    assert tasks == ["reports.archive"] * 4 + ["reports.build"] * 4
    # and stops cleanly, the asyncio pool its coroutines used closed on their loop
    assert worker.stop(15) == 0
    assert "Traceback" not in worker.logs() and "destroyed" not in worker.logs(), worker.logs()
