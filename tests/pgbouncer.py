"""The `pgbouncer_url` session fixture: a real PgBouncer in transaction pooling mode in
front of the session's test PostgreSQL (registered in `tests/conftest.py`).

Nothing is skipped silently: without the `pgbouncer` program the tests that need it fail
in CI (the `CI` environment variable is set; `.ci/run` installs it) and are skipped with
the reason on a developer's machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers.pgbouncer import pgbouncer_binary, running_pgbouncer

MISSING = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"


@pytest.fixture(scope="session")
def pgbouncer_url(database_url: str) -> Iterator[str]:
    """A conninfo that reaches the session's server through PgBouncer, transaction mode."""
    if pgbouncer_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    with running_pgbouncer(database_url) as url:
        yield url
