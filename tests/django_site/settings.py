"""Settings of the tests' Django project: pgjobs' app and backend on the test server."""

from __future__ import annotations

import os
from typing import Any

import django
from psycopg.conninfo import conninfo_to_dict


def postgresql(url: str) -> dict[str, Any]:
    """A `DATABASES` entry for a libpq URL or connection string."""
    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
    }


SECRET_KEY = "pgjobs-tests"
USE_TZ = True
# The backport is an app of its own; Django 6's framework is part of Django.
BACKPORT = ["django_tasks"] if django.VERSION < (6,) else []
INSTALLED_APPS = ["pgjobs.contrib.django", "tests.django_site", *BACKPORT]
DATABASES = {
    "default": postgresql(os.environ["PGJOBS_DJANGO_TEST_DATABASE_URL"]),
    # The same database under another alias, and a database pgjobs cannot enqueue on.
    "other": postgresql(os.environ["PGJOBS_DJANGO_TEST_DATABASE_URL"]),
    "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
PGJOBS_APP = "tests.django_site.jobs:app"
PGJOBS_SCHEMA = os.environ.get("PGJOBS_SCHEMA", "pgjobs")
PGJOBS_TASK_MODULES = ["tests.django_site.more_tasks"]
BACKEND = "pgjobs.contrib.django.PgjobsBackend"
TASKS = {
    "default": {"BACKEND": BACKEND, "QUEUES": ["default", "mail", "slow"]},
    "once": {"BACKEND": BACKEND, "QUEUES": [], "OPTIONS": {"MAX_ATTEMPTS": 1}},
}
