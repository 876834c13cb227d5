"""What `manage.py pgjobs_work` does around the worker of `pgjobs work`.

- Discovery: it imports the `tasks` module of every installed app and the modules of
  the setting `PGJOBS_TASK_MODULES`, which declares their pgjobs tasks on their App and
  their Django tasks with the backend (see `registry`), before the worker starts.
- Around every attempt, as Django does around a request, it closes the Django database
  connections that broke or outlived `CONN_MAX_AGE` (`close_old_connections`), so a
  task's ORM never runs on a dead connection and none is held for ever.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import autodiscover_modules

from pgjobs.app import App
from pgjobs.contrib.django import registry


def discover_tasks() -> None:
    """Import every installed app's `tasks` module and the `PGJOBS_TASK_MODULES`."""
    autodiscover_modules("tasks")
    for name in getattr(settings, "PGJOBS_TASK_MODULES", ()):
        importlib.import_module(name)


def serve(app: App) -> None:
    """Prepare `app` for a Django worker: the tasks discovered, Django's tasks among
    them (only where one was declared: the framework may not be installed), and fresh
    connections around every attempt."""
    discover_tasks()
    if registry.known():
        from pgjobs.contrib.django.runner import serve_django_tasks

        serve_django_tasks(app)
    app.middleware(_fresh_connections)
    app.middleware(_fresh_connections_async)


def _fresh_connections(job: Any, call_next: Callable[[], Any]) -> Any:
    close_old_connections()
    try:
        return call_next()
    finally:
        close_old_connections()


async def _fresh_connections_async(job: Any, call_next: Callable[[], Awaitable[Any]]) -> Any:
    # The ORM calls of async code run on asgiref's one thread for sync code: its connections.
    await sync_to_async(close_old_connections)()
    try:
        return await call_next()
    finally:
        await sync_to_async(close_old_connections)()
