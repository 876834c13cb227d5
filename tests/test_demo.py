"""`pgjobs demo`: the tour runs every sample job to its expected end, then says so, and
leaves the jobs for the dashboard to show."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from pgjobs.demo.tasks import SAMPLES, build_report

TOTAL = sum(len(batch.calls) for batch in SAMPLES)
EXPECTED_FAILED = sum(len(batch.calls) for batch in SAMPLES if batch.ends_failed)


@pytest.fixture
def demo_schema(database_url: str) -> Iterator[str]:
    """A schema name of this test's own; the demo creates it, the fixture drops it."""
    name = f"demo_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def run_demo(database_url: str, schema: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pgjobs",
            "demo",
            "--database-url",
            database_url,
            "--schema",
            schema,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


def final_states(database_url: str, schema: str) -> dict[tuple[str, str], int]:
    query = sql.SQL("SELECT task, state, count(*) FROM {} GROUP BY 1, 2").format(
        sql.Identifier(schema, "jobs")
    )
    with psycopg.connect(database_url) as conn:
        return {(task, state): count for task, state, count in conn.execute(query)}


@pytest.mark.slow
def test_demo_completes_every_job_but_the_one_meant_to_fail_and_leaves_them(
    database_url: str, demo_schema: str
) -> None:
    # when
    result = run_demo(database_url, demo_schema)

    # then
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        rf"completed {TOTAL - EXPECTED_FAILED}\s+failed {EXPECTED_FAILED}\b", result.stdout
    )
    assert "failed: job" in result.stdout and "month must be in 1..12" in result.stdout
    states = final_states(database_url, demo_schema)
    assert states.pop((build_report.name, "failed")) == EXPECTED_FAILED
    assert {state for _, state in states} == {"completed"}
    assert sum(states.values()) == TOTAL - EXPECTED_FAILED
    where = f"--database-url {shlex.quote(database_url)} --schema {demo_schema}"
    assert f"see the dashboard:     pgjobs web {where}, then open" in result.stdout


@pytest.mark.slow
def test_demo_run_again_replaces_the_previous_demo_jobs(
    database_url: str, demo_schema: str
) -> None:
    # given
    assert run_demo(database_url, demo_schema).returncode == 0

    # when
    result = run_demo(database_url, demo_schema)

    # then
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{TOTAL} jobs of the last demo cleared" in result.stdout
    assert sum(final_states(database_url, demo_schema).values()) == TOTAL
