"""Django tasks run by pgjobs' worker (`manage.py pgjobs_work`).

Each Django task declared for the backend becomes a pgjobs task of the App under its
`module_path`, storing its return value (`store_result`) so that its `TaskResult` can
read it. An attempt sees a `TaskContext` read from its job (its id, attempt number and
history), and the framework's `task_started` and `task_finished` signals are sent as its
other backends send them; a receiver that raises is logged and changes nothing.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from pgjobs.admin import get_job
from pgjobs.app import App
from pgjobs.contrib.django import registry
from pgjobs.contrib.django.backend import PgjobsBackend
from pgjobs.contrib.django.framework import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    task_finished,
    task_started,
)
from pgjobs.contrib.django.results import task_result
from pgjobs.errors import FailJob, SnoozeJob
from pgjobs.tasks import JobContext

log = logging.getLogger("pgjobs.contrib.django")


def serve_django_tasks(app: App) -> list[str]:
    """Register every Django task declared for pgjobs' backend on `app`; their names."""
    names = []
    for name, task in registry.known().items():
        if name not in app.tasks:
            app.task(name=name, pass_context=True, store_result=True)(_runner(app, task))
        names.append(name)
    return names


def _runner(app: App, task: Any) -> Callable[..., Any]:
    """The pgjobs task function that runs Django task `task` (an `async def` for one)."""
    if iscoroutinefunction(task.func):

        async def run_async(ctx: JobContext, args: list[Any], kwargs: dict[str, Any]) -> Any:
            # Off the event loop, where signal receivers may use the ORM: on asgiref's
            # thread for sync code, as the ORM of async code does.
            result = await sync_to_async(_started)(app, ctx)
            try:
                value = normalize_json(await task.func(*_arguments(task, result, args), **kwargs))
            except BaseException as error:
                if _ends_job(error, ctx):
                    await sync_to_async(_failed)(result, error)
                raise
            await sync_to_async(_succeeded)(result, value)
            return value

        return run_async

    def run(ctx: JobContext, args: list[Any], kwargs: dict[str, Any]) -> Any:
        result = _started(app, ctx)
        try:
            value = normalize_json(task.func(*_arguments(task, result, args), **kwargs))
        except BaseException as error:
            if _ends_job(error, ctx):
                _failed(result, error)
            raise
        _succeeded(result, value)
        return value

    return run


def _arguments(task: Any, result: Any, args: list[Any]) -> tuple[Any, ...]:
    return (TaskContext(task_result=result), *args) if task.takes_context else tuple(args)


def _started(app: App, ctx: JobContext) -> Any:
    """The attempt's `TaskResult` (RUNNING, with the job's history), announced."""
    result = task_result(get_job(app, ctx.job_id))
    _announce(task_started, result)
    return result


def _ends_job(error: BaseException, ctx: JobContext) -> bool:
    """Whether the attempt's exception fails the job rather than waiting for a retry:
    `FailJob`, or no attempt left (a snooze is neither)."""
    if isinstance(error, SnoozeJob):
        return False
    return isinstance(error, FailJob) or ctx.attempt >= ctx.max_attempts


def _succeeded(result: Any, value: Any) -> None:
    """The result SUCCESSFUL with the value to store (JSON as the framework makes it: a
    tuple becomes a list), announced."""
    _finish(result, TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "_return_value", value)
    _announce(task_finished, result)


def _failed(result: Any, error: BaseException) -> None:
    """The result FAILED with the exception that ended the job, announced."""
    _finish(result, TaskResultStatus.FAILED)
    kind = type(error)
    result.errors.append(
        TaskError(
            exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
            traceback="".join(traceback.format_exception(error)),
        )
    )
    _announce(task_finished, result)


def _finish(result: Any, status: Any) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())


def _announce(signal: Any, result: Any) -> None:
    """Send a signal of the framework; a receiver's exception is logged, and changes
    nothing of the job (as with pgjobs' own hooks)."""
    for receiver, response in signal.send_robust(sender=PgjobsBackend, task_result=result):
        if isinstance(response, Exception):
            log.error(
                "a receiver of a Django task signal failed: %s",
                getattr(receiver, "__qualname__", receiver),
                exc_info=response,
            )
