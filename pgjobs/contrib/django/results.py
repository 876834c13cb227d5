"""A pgjobs job as Django's Tasks framework sees it: a `TaskResult`.

A Django task's job carries the task's `module_path` as its task name and
`{"args": [...], "kwargs": {...}}` as its arguments; its state, attempts, errors and
stored result (`jobs.result`) become the result's status, `worker_ids`, `errors` and
`return_value`. Django has no state for a job that waits for a retry or for a cancelled
one: the first is READY (it is ready to run again), the second FAILED.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from pgjobs.contrib.django import registry
from pgjobs.contrib.django.framework import (
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from pgjobs.types import Job, JobState

STATUS = {
    JobState.AVAILABLE: TaskResultStatus.READY,  # new, or waiting for a retry
    JobState.BLOCKED: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}
PAYLOAD_KEYS = frozenset({"args", "kwargs"})
# An `errors` entry that is no exception a task raised (a lost worker, an unknown task, a
# result that could not be stored) is reported as pgjobs' own error.
PGJOBS_ERROR = "pgjobs.errors.PgJobsError"
CANCELLED_ERROR = "pgjobs.errors.JobCancelledError"
_EXCEPTION_NAME = re.compile(r"[A-Za-z_][\w.]*")


def payload(args: Any, kwargs: Any) -> dict[str, Any]:
    """The arguments of a Django task's job."""
    return {"args": list(args), "kwargs": dict(kwargs)}


def django_task(job: Job) -> Any:
    """The Django task that job `job` runs; TaskResultDoesNotExist for another job."""
    task = registry.find(job.task)
    if task is None and set(job.payload) == PAYLOAD_KEYS:
        try:
            task = import_string(job.task)
        except ImportError:
            task = None
    if not isinstance(task, Task):
        raise TaskResultDoesNotExist(f"job {job.id} is not a Django task's ({job.task})")
    return task


def task_result(job: Job) -> Any:
    """The `TaskResult` of a Django task's job, as it stands."""
    task = django_task(job)
    run_after = job.run_at if job.run_at > job.created_at else None
    errors = [task_error(entry) for entry in job.errors]
    if job.state == JobState.CANCELLED and not errors:
        errors.append(TaskError(exception_class_path=CANCELLED_ERROR, traceback="cancelled"))
    result = TaskResult(
        task=task.using(priority=job.priority, queue_name=job.queue, run_after=_local(run_after)),
        id=str(job.id),
        status=STATUS[job.state],
        enqueued_at=_local(job.created_at),
        started_at=_local(job.started_at),
        finished_at=_local(job.finished_at),
        last_attempted_at=_local(job.started_at),
        args=job.payload["args"],
        kwargs=job.payload["kwargs"],
        backend=task.backend,
        errors=errors,
        worker_ids=worker_ids(job),
    )
    if job.state == JobState.COMPLETED:
        object.__setattr__(result, "_return_value", job.result)  # as the framework does
    return result


def task_error(entry: Mapping[str, Any]) -> Any:
    """One `errors` entry as a `TaskError`: the exception's class from its message (which
    reads like a traceback's last line), its traceback, or the message where none was
    recorded."""
    message = str(entry.get("error") or "")
    return TaskError(
        exception_class_path=exception_path(message),
        traceback=entry.get("traceback") or message,
    )


def exception_path(message: str) -> str:
    """`module.Class` of the exception a message like `ValueError: boom` names."""
    name = message.partition(":")[0].strip()
    if not _EXCEPTION_NAME.fullmatch(name):
        return PGJOBS_ERROR
    if "." in name:
        return name
    found = getattr(builtins, name, None)
    is_exception = isinstance(found, type) and issubclass(found, BaseException)
    return f"builtins.{name}" if is_exception else PGJOBS_ERROR


def worker_ids(job: Job) -> list[str]:
    """The workers of the attempts recorded: those that failed, then the one that runs or
    completed the job."""
    ids = [str(entry["worker"]) for entry in job.errors if entry.get("worker")]
    if job.state in (JobState.RUNNING, JobState.COMPLETED) and job.worker_id:
        ids.append(job.worker_id)
    return ids


def _local(moment: datetime | None) -> datetime | None:
    """A time as Django hands them out: naive, in the current time zone, without USE_TZ."""
    if moment is None or settings.USE_TZ:
        return moment
    return timezone.make_naive(moment)
