"""`PgjobsBackend`: Django's Tasks framework on pgjobs.

`TASKS = {"default": {"BACKEND": "pgjobs.contrib.django.PgjobsBackend"}}`. A Django
task's `enqueue()` inserts a pgjobs job on Django's connection (`OPTIONS["DATABASE"]`,
by default the `default` one), so inside `transaction.atomic()` it commits or rolls back
with the block; `manage.py pgjobs_work` runs it; `get_result` reads the job back. The
framework's `validate_task` runs first, so its own errors (`InvalidTask`) come where it
raises them; what pgjobs adds (OPTIONS) is checked when the backend is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from pgjobs.admin import get_job
from pgjobs.contrib.django import registry
from pgjobs.contrib.django.conf import get_app
from pgjobs.contrib.django.connection import django_connection
from pgjobs.contrib.django.framework import (
    BaseTaskBackend,
    InvalidTaskBackend,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
)
from pgjobs.contrib.django.results import payload, task_result
from pgjobs.errors import JobNotFoundError

OPTIONS = ("DATABASE", "MAX_ATTEMPTS")


class PgjobsBackend(BaseTaskBackend):  # type: ignore[misc]  # the framework is untyped here
    """Django tasks as pgjobs jobs: deferred, prioritised, async, with stored results.

    OPTIONS: `DATABASE`, the alias of the Django connection that enqueues (default
    "default", or pgjobs' own connection, committed at once, when `PGJOBS_DATABASE_URL`
    points elsewhere); `MAX_ATTEMPTS`, attempts a job gets before it fails (default: the
    App's, 20). `QUEUES` (the framework's) lists the queue names tasks may use.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(OPTIONS))
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: pgjobs' backend has no OPTIONS {', '.join(unknown)} "
                f"(it knows {', '.join(OPTIONS)})"
            )
        self.database: str | None = self.options.get("DATABASE", _default_database())
        if self.database is not None and self.database not in connections.settings:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: OPTIONS DATABASE {self.database!r} is not in DATABASES"
            )
        self.max_attempts: int | None = self.options.get("MAX_ATTEMPTS")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: OPTIONS MAX_ATTEMPTS must be a whole number >= 1, "
                f"got {self.max_attempts!r}"
            )

    def validate_task(self, task: Any) -> None:
        """The framework's checks; a task that passes is one `pgjobs_work` will serve."""
        super().validate_task(task)
        registry.remember(task)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Insert the task's job on Django's connection, in its current transaction."""
        self.validate_task(task)
        arguments = normalize_json(payload(args, kwargs))  # the framework's JSON rules
        options: dict[str, Any] = {"queue": task.queue_name, "priority": task.priority}
        if task.run_after is not None:
            options["run_at"] = _aware(task.run_after)
        if self.max_attempts is not None:
            options["max_attempts"] = self.max_attempts
        connection = django_connection(self.database)
        job_id = get_app().enqueue(connection, task.module_path, arguments, **options)
        result = TaskResult(
            task=task,
            id=str(job_id),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=arguments["args"],
            kwargs=arguments["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        """The task's result as its job stands now (committed: as workers see it)."""
        missing = TaskResultDoesNotExist(f"no task result {result_id!r}")
        try:
            job_id = int(result_id)
        except (ValueError, TypeError):
            raise missing from None
        try:
            job = get_job(get_app(), job_id)
        except JobNotFoundError:
            raise missing from None
        return task_result(job)


def _default_database() -> str | None:
    """Django's default connection, unless pgjobs' database is another one."""
    return None if getattr(settings, "PGJOBS_DATABASE_URL", None) else "default"


def _aware(moment: datetime) -> datetime:
    """`run_after` as pgjobs takes it: aware (a naive one is in Django's time zone)."""
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)
