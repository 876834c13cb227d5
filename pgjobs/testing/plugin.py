"""The pytest plugin of `pgjobs.testing`: the `jobs` fixture and the two it is built on.

Registered by the `pytest11` entry point as `pgjobs` (`-p no:pgjobs` turns it off), so
it imports nothing from pgjobs until a test asks for a fixture. Override in your
conftest:

- `pgjobs_app` (required): your `pgjobs.App`;
- `pgjobs_connection`: the connection your test works on (a psycopg Connection, a
  SQLAlchemy Connection or Session). By default a new connection to the App's database
  whose transaction is rolled back after the test. Return None to work on committed data
  through pgjobs' own connections instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pgjobs.app import App
    from pgjobs.testing.helper import Jobs


@pytest.fixture
def pgjobs_app() -> App:
    """Your App: override this fixture in your conftest."""
    raise pytest.UsageError(
        "pgjobs.testing: define a fixture named `pgjobs_app` that returns your pgjobs.App "
        "(in conftest.py: @pytest.fixture def pgjobs_app(): return myapp.jobs.app)"
    )


@pytest.fixture
def pgjobs_connection(pgjobs_app: App) -> Iterator[Any]:
    """A connection to the App's database in a transaction rolled back after the test."""
    from pgjobs.db import connect

    with connect(pgjobs_app.database.url) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.fixture
def jobs(pgjobs_app: App, pgjobs_connection: Any) -> Iterator[Jobs]:
    """`pgjobs.testing.Jobs` on the test's connection: assert what was enqueued, run it."""
    from pgjobs.testing.helper import Jobs

    with Jobs(pgjobs_app, pgjobs_connection) as helper:
        yield helper
