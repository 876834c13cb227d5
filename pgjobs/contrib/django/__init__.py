"""pgjobs in Django (the `django` extra): add `"pgjobs.contrib.django"` to `INSTALLED_APPS`.

- `task.enqueue(django.db.connection, ...)` (or `connections[alias]`): the job commits or
  rolls back with the `transaction.atomic()` block around it (see `connection`).
- The settings `PGJOBS_APP`, `PGJOBS_SCHEMA` and `PGJOBS_DATABASE_URL` (default:
  `DATABASES["default"]`) say where jobs go (see `conf`); `PGJOBS_TASK_MODULES` adds
  modules to the `tasks` modules of the installed apps that the worker imports.
- `manage.py pgjobs_migrate` and `manage.py pgjobs_work`, with the options of
  `pgjobs migrate` and `pgjobs work` (see `commands`, `serving`).
- `PgjobsBackend`, a backend for Django's Tasks framework (`django.tasks`, or the
  `django-tasks` backport on Django 5.2): see `backend`, `results` and `runner`.

Importing this package makes Django's connections acceptable to every `enqueue`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgjobs.contrib.django.connection import unwrap
from pgjobs.data.connector import register_unwrapper

if TYPE_CHECKING:
    from pgjobs.app import App
    from pgjobs.contrib.django.backend import PgjobsBackend as PgjobsBackend

__all__ = ["PgjobsBackend", "get_app"]

register_unwrapper(unwrap)


def get_app() -> App:
    """The App the settings make: `PGJOBS_APP`, or the Django tasks' own (see `conf`)."""
    from pgjobs.contrib.django.conf import get_app as settings_app

    return settings_app()


def __getattr__(name: str) -> Any:
    """`PgjobsBackend`, imported when the framework asks for it (it needs the framework)."""
    if name == "PgjobsBackend":
        from pgjobs.contrib.django.backend import PgjobsBackend

        return PgjobsBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
