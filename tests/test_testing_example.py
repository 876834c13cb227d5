"""The example of docs/testing.md ("Testing your tasks"): the very files it shows, run by pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from tests.helpers import REPO_ROOT, jobs
from tests.helpers.readme import doc_section

EXAMPLE = REPO_ROOT / "examples" / "testing"
FILES = ("shop.py", "conftest.py", "test_shop.py")


def run_example(database_url: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on `examples/testing`, from its folder, as the shop's developer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=EXAMPLE,
        env={**os.environ, "PGJOBS_DATABASE_URL": database_url, "PGJOBS_SCHEMA": schema},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_docs_show_the_example_files_as_they_are() -> None:
    section = doc_section("docs/testing.md", "A complete example")
    for name in FILES:
        block = f"`examples/testing/{name}`:\n\n```python\n{(EXAMPLE / name).read_text()}```"
        assert block in section, f"docs/testing.md does not show examples/testing/{name} as it is"


@pytest.mark.slow
def test_the_example_passes_and_its_rolled_back_tests_leave_nothing(
    database_url: str, schema: str, observer: psycopg.Connection[Any]
) -> None:
    # when: the tests that run inside a transaction rolled back at the end
    result = run_example(database_url, schema, "-k", "not TestAfterCommit")
    # then: they pass, and no job they enqueued (or their jobs enqueued) was committed
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b5 passed\b", result.stdout), result.stdout
    assert jobs(observer, schema) == []


@pytest.mark.slow
def test_the_example_passes_on_committed_data(database_url: str, schema: str) -> None:
    result = run_example(database_url, schema, "-k", "TestAfterCommit")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout
