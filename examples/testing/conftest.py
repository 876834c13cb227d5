"""Fixtures of the shop's tests: each test runs in a transaction rolled back at the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import shop

import pgjobs
from pgjobs.migrate import upgrade


@pytest.fixture(scope="session", autouse=True)
def database() -> None:
    """pgjobs' tables, once per test session (as `pgjobs migrate` does)."""
    upgrade(shop.app.database.url, shop.app.schema)


@pytest.fixture
def db() -> Iterator[psycopg.Connection[Any]]:
    """The test's connection; whatever the test does there is rolled back."""
    with psycopg.connect(shop.app.database.url) as conn:
        conn.execute("CREATE TEMPORARY TABLE orders (id serial, email text, total int)")
        yield conn
        conn.rollback()


@pytest.fixture
def pgjobs_app() -> pgjobs.App:
    return shop.app


@pytest.fixture
def pgjobs_connection(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    return db  # the `jobs` fixture reads, runs and enqueues on the test's connection


@pytest.fixture(autouse=True)
def outbox() -> Iterator[list[str]]:
    yield shop.outbox
    shop.outbox.clear()
