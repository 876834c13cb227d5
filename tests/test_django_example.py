"""The Django example (examples/django_project), run as its README in docs/django.md says:
`pgjobs_migrate`, `migrate`, `runserver`, real requests, `pgjobs_work`; and the docs' code,
which is the example's, as it is."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.django_site.workers import DjangoWorker
from tests.helpers import REPO_ROOT, jobs, wait_until
from tests.helpers.readme import code_blocks

EXAMPLE = REPO_ROOT / "examples" / "django_project"
DOCS = REPO_ROOT / "docs" / "django.md"


def test_every_python_block_of_the_docs_is_the_examples_code() -> None:
    sources = {path: path.read_text() for path in EXAMPLE.rglob("*.py")}
    blocks = code_blocks(DOCS.read_text(), "python")
    assert len(blocks) >= 4
    for block in blocks:
        found = [path for path, text in sources.items() if block in text]
        assert found, f"docs/django.md shows code that is in no file of the example:\n{block}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Shop:
    """The example project on the test's server, in a schema of its own (its tables too,
    through `search_path`), driven by its `manage.py`."""

    def __init__(self, database_url: str, schema: str) -> None:
        self.schema = schema
        self.url = make_conninfo(database_url, options=f"-csearch_path={schema}")
        self.env = {**os.environ, "DATABASE_URL": self.url, "PGJOBS_SCHEMA": schema}

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLE,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def worker(self) -> DjangoWorker:
        """`manage.py pgjobs_work` of the example (not started)."""
        return DjangoWorker(
            self.url,
            self.schema,
            manage=("manage.py",),
            settings=None,
            cwd=EXAMPLE,
            url_variable="DATABASE_URL",
        )


@pytest.fixture
def shop(database_url: str) -> Iterator[Shop]:
    name = f"shop_{os.urandom(6).hex()}"
    yield Shop(database_url, name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def server(shop: Shop, tmp_path: Path) -> Iterator[httpx.Client]:
    """`manage.py runserver` on a free port, and a client of it."""
    shop.manage("pgjobs_migrate")  # creates the schema, where `migrate` puts the tables
    shop.manage("migrate")
    port = free_port()
    log = tmp_path / "runserver.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=EXAMPLE,
            env=shop.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def answers() -> bool:
                assert process.poll() is None, log.read_text()
                try:
                    return client.get("/").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(answers, timeout=20, message=lambda: log.read_text())
            yield client
    finally:
        process.kill()
        process.wait(10)


def order(client: httpx.Client, email: str) -> httpx.Response:
    """Fill in the order form, as a browser does (its CSRF token included)."""
    form = client.get("/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None, form.text
    return client.post("/orders", data={"email": email, "csrfmiddlewaretoken": token[1]})


def orders(observer: psycopg.Connection[Any], schema: str) -> list[str]:
    table = sql.Identifier(schema, "orders_order")
    query = sql.SQL("SELECT email FROM {} ORDER BY id").format(table)
    return [row[0] for row in observer.execute(query).fetchall()]


@pytest.mark.slow
def test_the_example_commits_the_order_and_its_jobs_together_and_a_worker_runs_them(
    shop: Shop, server: httpx.Client, observer: psycopg.Connection[Any]
) -> None:
    # when: an order, then a second one of the same address (refused at the commit)
    placed = order(server, "a@example.com")
    again = order(server, "a@example.com")
    # then: one order, and its two jobs; the refused one left neither order nor job
    assert placed.status_code == 302, placed.text
    assert again.status_code == 409, again.text
    assert orders(observer, shop.schema) == ["a@example.com"]
    assert [(job["task"], job["queue"]) for job in jobs(observer, shop.schema)] == [
        ("orders.tasks.send_confirmation", "mail"),
        ("orders.tasks.pack", "default"),
    ]
    status = placed.headers["location"]
    assert server.get(status).json() == {
        "email": "a@example.com",
        "packed": False,
        "confirmed": False,
        "confirmation": "READY",
        "message": None,
    }
    # when: the example's worker runs
    with shop.worker() as worker:
        worker.start().wait_ready()
        # then: both jobs ran, and the page shows the Django task's stored result
        wait_until(
            lambda: server.get(status).json()["confirmation"] == "SUCCESSFUL",
            message=worker.describe,
        )
        wait_until(lambda: server.get(status).json()["packed"], message=worker.describe)
        assert worker.stop() == 0, worker.describe()
    assert server.get(status).json() == {
        "email": "a@example.com",
        "packed": True,
        "confirmed": True,
        "confirmation": "SUCCESSFUL",
        "message": "confirmation sent to a@example.com",
    }


@pytest.mark.slow
def test_the_examples_asgi_module_serves_the_shop(shop: Shop) -> None:
    shop.manage("pgjobs_migrate")
    shop.manage("migrate")
    script = """
import asyncio, httpx
from shop.asgi import application

async def get(path, client=("127.0.0.1", 5000)):
    transport = httpx.ASGITransport(app=application, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        return await c.get(path)

async def main():
    print((await get("/")).status_code)
    jobs = await get("/jobs/queues")
    print(jobs.status_code, "read-only" in jobs.text, '<form method="post"' in jobs.text)
    print((await get("/jobs/", client=("203.0.113.9", 5000))).status_code)

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=EXAMPLE,
        env=shop.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The shop, its dashboard at /jobs/ read-only for this machine, 403 for anyone else.
    assert result.stdout.split("\n")[:3] == ["200", "200 True False", "403"], (
        result.stdout + result.stderr
    )
