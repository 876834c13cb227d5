"""A module of tasks that is no app's `tasks` module: found through `PGJOBS_TASK_MODULES`."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task


@task
def shout(text: str) -> str:
    return text.upper()
