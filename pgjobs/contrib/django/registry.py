"""The Django tasks this process has seen declared for pgjobs' backend, by name.

The framework validates every `@task` with its backend when the task is declared, so the
backend notes each one here; `manage.py pgjobs_work` then serves them all, under the name
their jobs carry (`Task.module_path`). Free of the framework, so a worker can ask even
where it is not installed.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_tasks: dict[str, Any] = {}


def remember(task: Any) -> None:
    """Note a Django task; the first declaration of a name is kept (`using()` copies it)."""
    with _lock:
        _tasks.setdefault(task.module_path, task)


def known() -> dict[str, Any]:
    """Every Django task noted so far, by the name its jobs carry."""
    with _lock:
        return dict(_tasks)


def find(name: str) -> Any | None:
    """The Django task whose jobs carry `name`, if it was declared in this process."""
    with _lock:
        return _tasks.get(name)
