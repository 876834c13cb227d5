"""Fixtures of the Django tests; each test module imports the ones it uses.

Django's settings belong to the process, so they are configured once, by the first test
that asks for `django_project`, never at import: the rest of the suite runs without
Django. Each test gets its own schema through `override_settings(PGJOBS_SCHEMA=...)`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest

from tests.django_site.workers import DjangoWorker, StartDjangoWorker


@pytest.fixture(scope="session")
def django_project(database_url: str) -> None:
    """Django configured in this process with tests/django_site/settings.py."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    os.environ["PGJOBS_DJANGO_TEST_DATABASE_URL"] = database_url
    module = importlib.import_module("tests.django_site.settings")
    settings.configure(**{name: getattr(module, name) for name in dir(module) if name.isupper()})
    django.setup()


@pytest.fixture
def django_schema(django_project: None, schema: str) -> Iterator[str]:
    """The test's migrated schema, as the `PGJOBS_SCHEMA` setting; Django's connections
    are closed afterwards, so none holds a lock on the schema as it is dropped."""
    from django.db import connections
    from django.test import override_settings

    with override_settings(PGJOBS_SCHEMA=schema):
        yield schema
    connections.close_all()


@pytest.fixture
def start_django_worker(database_url: str, schema: str) -> Iterator[StartDjangoWorker]:
    """Start `manage.py pgjobs_work` processes on the test's schema:
    `start_django_worker(*args, **DjangoWorker options)`, waited until ready. At teardown
    every worker still running is killed and its logs are printed (shown on failure)."""
    workers: list[DjangoWorker] = []

    def start(*args: str, **options: object) -> DjangoWorker:
        worker = DjangoWorker(database_url, schema, *args, **options)
        workers.append(worker)
        worker.start().wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.close()
        print(f"--- {worker.describe()}")
        worker.remove_log()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` the tests that start `manage.py pgjobs_work`, as `start_worker` ones are."""
    for item in items:
        if "start_django_worker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
