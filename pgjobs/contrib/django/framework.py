"""Django's Tasks framework, wherever this Django has it.

Django 6 ships it as `django.tasks`; on Django 5.2 it is the `django-tasks` backport, with
the same classes under `django_tasks` and two exceptions named differently. The backend
and the worker take the framework's names from here, so they raise the errors the
installed framework expects. Imported by name, so no type checker needs both installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def _load() -> tuple[Any, Any, Any, Any]:
    """The framework's package, its exceptions, its signals and `normalize_json`."""
    try:
        tasks = importlib.import_module("django.tasks")
    except ImportError:
        try:
            tasks = importlib.import_module("django_tasks")
        except ImportError:
            raise ImproperlyConfigured(
                "pgjobs' Tasks backend needs Django's Tasks framework: Django 6, or on "
                "Django 5.2 the backport (pip install django-tasks)"
            ) from None
        utils = importlib.import_module("django_tasks.utils")
    else:
        utils = importlib.import_module("django.utils.json")
    exceptions = importlib.import_module(f"{tasks.__name__}.exceptions")
    signals = importlib.import_module(f"{tasks.__name__}.signals")
    return tasks, exceptions, signals, utils.normalize_json


_tasks, _exceptions, _signals, normalize_json = _load()

_base = importlib.import_module(f"{_tasks.__name__}.base")
BaseTaskBackend: Any = importlib.import_module(f"{_tasks.__name__}.backends.base").BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
task_backends: Any = _tasks.task_backends

# Django 6's names, then the backport's.
InvalidTask: type[Exception] = getattr(_exceptions, "InvalidTask", None) or (
    _exceptions.InvalidTaskError
)
InvalidTaskBackend: type[Exception] = getattr(_exceptions, "InvalidTaskBackend", None) or (
    _exceptions.InvalidTaskBackendError
)
TaskResultDoesNotExist: type[Exception] = _exceptions.TaskResultDoesNotExist

task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
