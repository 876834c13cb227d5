"""The README's Quickstart, pasted as a reader would: its files written, its code run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.helpers import jobs
from tests.helpers.readme import code_blocks, doc_section


def quickstart_python() -> tuple[str, str]:
    """The Quickstart's two Python blocks: `myapp/jobs.py`, then the code that enqueues."""
    module, enqueuing = code_blocks(doc_section("README.md", "Quickstart"), "python")
    assert module.startswith("# myapp/jobs.py\n")
    return module, enqueuing


def test_the_quickstart_runs_as_pasted_and_enqueues_with_the_users_row(
    tmp_path: Path, database_url: str, schema: str, observer: psycopg.Connection[Any]
) -> None:
    # given: the reader's folder holding myapp/jobs.py, as the README shows it
    module, enqueuing = quickstart_python()
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "jobs.py").write_text(module)
    # when: the enqueuing snippet runs there, its table landing in the test's schema
    env = {
        **os.environ,
        "PGJOBS_DATABASE_URL": database_url,
        "PGJOBS_SCHEMA": schema,
        "PGOPTIONS": f"-c search_path={schema}",
    }
    run = subprocess.run(
        [sys.executable, "-"],
        input=enqueuing,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then: the user and every job it enqueued are there
    assert run.returncode == 0, run.stderr
    users = sql.SQL("SELECT email FROM {}").format(sql.Identifier(schema, "users"))
    assert observer.execute(users).fetchall() == [("a@example.com",)]
    enqueued = [(job["task"], job["payload"]["to"], job["queue"]) for job in jobs(observer, schema)]
    assert enqueued == [
        ("email.send", "a@example.com", "mail"),
        ("email.send", "a@example.com", "mail"),
        ("email.send", "b@example.com", "mail"),
        ("email.send", "c@example.com", "mail"),
        ("email.send", "d@example.com", "mail"),
    ]
