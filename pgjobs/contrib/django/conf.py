"""pgjobs' settings from Django's: the database, the schema and the App.

A Django project configures everything in its settings module, so the integration reads
`PGJOBS_DATABASE_URL`, `PGJOBS_SCHEMA` and `PGJOBS_APP` there, not in the environment
(a settings module that wants the environment reads it itself). The database defaults to
`DATABASES["default"]`, so jobs and the project's tables share one database and one
transaction. The App is made (or `PGJOBS_APP` pointed at that database) once per process
and again whenever a test changes one of these settings (`override_settings`).
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import pq
from psycopg.conninfo import make_conninfo

from pgjobs.app import App
from pgjobs.config import DEFAULT_SCHEMA

# The settings whose change makes another App (see `_forget_app`).
WATCHED = frozenset({"PGJOBS_APP", "PGJOBS_SCHEMA", "PGJOBS_DATABASE_URL", "DATABASES"})
# Where `pgjobs work` (run by `manage.py pgjobs_work`) finds this process's App.
APP_REFERENCE = f"{__name__}:app"

_lock = threading.Lock()
_app: App | None = None
_own = False  # whether `_app` was made here (and so is closed here)


def database_url() -> str:
    """`PGJOBS_DATABASE_URL`, else the libpq connection string of `DATABASES["default"]`."""
    explicit = getattr(settings, "PGJOBS_DATABASE_URL", None)
    if explicit:
        return str(explicit)
    default = connections[DEFAULT_DB_ALIAS]
    if default.vendor != "postgresql":
        raise ImproperlyConfigured(
            f'pgjobs needs PostgreSQL, and DATABASES["default"] is {default.vendor}: '
            "set PGJOBS_DATABASE_URL to a postgresql:// URL"
        )
    # What Django itself would connect with, less its own keys (cursor_factory, context).
    libpq_keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    params = default.get_connection_params()
    return make_conninfo(**{key: v for key, v in params.items() if key in libpq_keywords})


def schema() -> str:
    """`PGJOBS_SCHEMA`, else pgjobs' default schema."""
    return str(getattr(settings, "PGJOBS_SCHEMA", None) or DEFAULT_SCHEMA)


def get_app() -> App:
    """This process's App: `PGJOBS_APP` pointed at the settings' database and schema, or,
    without it, an App of their own for the Django tasks."""
    global _app, _own
    with _lock:
        if _app is None:
            reference = getattr(settings, "PGJOBS_APP", None)
            if reference:
                _app, _own = load_app(str(reference), "PGJOBS_APP"), False
                _app.configure(database_url=database_url(), schema=schema())
            else:
                _app, _own = App(database_url(), schema=schema()), True
        return _app


def use_app(app: App) -> None:
    """Make `app` this process's App (`pgjobs_work --app`), pointed at the settings'."""
    global _app, _own
    app.configure(database_url=database_url(), schema=schema())
    with _lock:
        _app, _own = app, False


def load_app(reference: str, where: str) -> App:
    """The App at `module:attribute`; ImproperlyConfigured, naming `where`, otherwise."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ImproperlyConfigured(f"{where} must look like module:attribute, got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ImproperlyConfigured(f"{where}: cannot import module {module_name!r}") from None
        raise
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        found = "nothing" if app is None else type(app).__name__
        raise ImproperlyConfigured(f"{where}: {reference} is not a pgjobs.App (found {found})")
    return app


def _forget_app(*, setting: str, **kwargs: Any) -> None:
    """Make the App again after a change of the settings it comes from, so that a test
    that overrides `PGJOBS_SCHEMA` enqueues into its own schema."""
    global _app, _own
    if setting not in WATCHED:
        return
    with _lock:
        app, own, _app, _own = _app, _own, None, False
    if app is not None and own:
        app.close()
    if setting != "PGJOBS_APP" and getattr(settings, "PGJOBS_APP", None):
        get_app()  # the project's App points at the new settings at once, as at start


setting_changed.connect(_forget_app, dispatch_uid="pgjobs.contrib.django.conf")


def __getattr__(name: str) -> Any:
    """`app`: this process's App, for `pgjobs work --app pgjobs.contrib.django.conf:app`."""
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
