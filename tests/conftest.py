"""Test harness: one real PostgreSQL per session, one migrated schema per test.

The server is, in order: `PGJOBS_TEST_DATABASE_URL`; a testcontainers PostgreSQL when a
Docker daemon answers; a throwaway cluster from the local server binaries. Nothing is
mocked; tests are isolated by schema, so they can run in any order.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.embedded import LocalCluster
from pgjobs.migrate import upgrade

pytest_plugins = ["tests.helpers.fixtures", "tests.pgbouncer"]

# Settings that trade durability for speed; only the throwaway clusters get them.
FAST_SERVER_OPTIONS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def docker_daemon_answers() -> bool:
    """True when a Docker daemon responds within a few seconds."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def testcontainers_url(stack: ExitStack) -> str:
    """Start a disposable PostgreSQL container for the session."""
    from testcontainers.postgres import PostgresContainer

    container = stack.enter_context(PostgresContainer("postgres:15-alpine", driver=None))
    url: str = container.get_connection_url()
    return url


def throwaway_cluster(stack: ExitStack) -> LocalCluster:
    """Start a cluster in a fresh temp dir from the server binaries on this machine."""
    root = Path(tempfile.mkdtemp(prefix="pgjobs-test-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    cluster = LocalCluster(root / "pgdata", server_options=FAST_SERVER_OPTIONS)
    stack.callback(cluster.stop)  # runs before the rmtree above
    cluster.ensure_running()
    return cluster


@pytest.fixture(scope="session")
def test_server() -> Iterator[tuple[str, LocalCluster | None]]:
    """The session's server: its URL, and the cluster when this session started it."""
    with ExitStack() as stack:
        url = os.environ.get("PGJOBS_TEST_DATABASE_URL")
        cluster = None
        if not url:
            if docker_daemon_answers():
                url = testcontainers_url(stack)
            else:
                cluster = throwaway_cluster(stack)
                url = cluster.ensure_running()
        yield url, cluster


@pytest.fixture(scope="session")
def database_url(test_server: tuple[str, LocalCluster | None]) -> str:
    """The URL of the session's PostgreSQL server."""
    return test_server[0]


@pytest.fixture(scope="session")
def local_cluster(test_server: tuple[str, LocalCluster | None]) -> LocalCluster | None:
    """The session's own local cluster, which tests may restart; None for other servers."""
    return test_server[1]


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A freshly migrated schema of this test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    upgrade(database_url, name)
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def app(database_url: str, schema: str) -> Iterator[App]:
    """An App on the test's schema."""
    application = App(database_url, schema=schema)
    yield application
    application.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection for the test's own queries (not autocommit)."""
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.fixture
def observer(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A second, autocommit connection: sees only what is committed."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(autouse=True)
def no_inherited_terminal_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in the tests draw their tables for a pipe (as wide as their content),
    whatever started pytest: pytest-xdist's test processes inherit COLUMNS=80, which
    would wrap them. A test that wants a width sets COLUMNS itself."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that starts worker processes through `start_worker`, so
    `pytest -m "not slow"` is a quick inner loop; tests that start other processes carry
    the mark themselves."""
    for item in items:
        if "start_worker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
