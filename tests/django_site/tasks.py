"""The tests' tasks, found by `pgjobs_work` as every installed app's `tasks` module is.

Django tasks (through pgjobs' backend) and one pgjobs task of `PGJOBS_APP`; those that
run record each run in `<PGJOBS_SCHEMA>.runs` (tests/helpers/rows.py) on Django's
connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.db import connection
from django.dispatch import receiver
from psycopg import sql

from tests.django_site.jobs import app

try:
    from django.tasks import TaskContext, task
    from django.tasks.signals import task_finished
except ImportError:  # Django 5.2: the backport
    from django_tasks import TaskContext, task
    from django_tasks.signals import task_finished


def record(label: str, job_id: Any = None, attempt: int | None = None) -> None:
    """One row in `<schema>.runs`."""
    runs = sql.Identifier(settings.PGJOBS_SCHEMA, "runs").as_string()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {runs} (job_id, attempt, label) VALUES (%s, %s, %s)",
            [job_id, attempt, label],
        )


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def multiply(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a * b


@task
def pair(a: int, b: int) -> tuple[int, int]:
    return (a, b)  # stored as JSON: comes back as a list


@task(takes_context=True)
def flaky(context: TaskContext, label: str) -> dict[str, Any]:
    if context.attempt == 1:
        raise ValueError(f"{label}: the first attempt fails")
    result = context.task_result
    return {"id": result.id, "attempt": context.attempt, "errors": len(result.errors)}


@task(backend="once")
def broken(reason: str) -> None:
    raise OSError(reason)


@task(takes_context=True)
def run(context: TaskContext, label: str) -> str:
    record(label, int(context.task_result.id), context.attempt)
    return label


@app.task
def note(label: str) -> None:
    """A pgjobs task, enqueued with `note.enqueue(connection, ...)`."""
    record(label)


@receiver(task_finished)
def finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    """The framework's signal, sent by the worker: a run's row says how the task ended."""
    record(f"{task_result.task.name} {task_result.status}", int(task_result.id), None)
