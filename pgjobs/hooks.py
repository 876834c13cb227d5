"""Hooks and middleware: the public way to observe jobs and to wrap what happens to them.

- `@app.on("job_failed")` registers a handler of an event (`EVENT_NAMES`). Producer-side
  handlers (`job_enqueued`) run in the enqueuing thread right after the insert; worker
  handlers run on the worker's hook dispatcher (worker/hook_dispatch.py), never on an
  executor thread or the completer. A handler's exception is logged, never raised.
- `@app.middleware` wraps every attempt: `def mw(job, call_next)` for `def` tasks,
  `async def mw(job, call_next)` for `async def` ones, outermost first.
- `@app.enqueue_middleware` sees the jobs of each enqueue before they are written, to
  put metadata in `job.meta`; a generator function also runs after the write (its
  `yield` is where the jobs are written), like `contextlib.contextmanager`.

Nothing registered costs nothing: every caller asks first whether anyone listens.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from pgjobs.errors import MiddlewareError
from pgjobs.types import ClaimedJob

log = logging.getLogger("pgjobs.hooks")

PRODUCER_EVENTS = ("job_enqueued",)
WORKER_EVENTS = (
    "job_started",
    "job_completed",
    "job_retried",
    "job_failed",
    "job_cancelled",
    "job_snoozed",
    "worker_started",
    "worker_stopped",
)
EVENT_NAMES = frozenset((*PRODUCER_EVENTS, *WORKER_EVENTS))


class JobInfo:
    """A job as hooks and middleware see it: `id`, `task` (its name), `queue`, `attempt`
    (0 before its first claim), `args` (the task's arguments), `meta` (its metadata, a
    dict that enqueue middleware may change), `priority`, `max_attempts`, `workflow_id`.

    `args` and `meta` are decoded from the stored JSON on first use only.
    """

    __slots__ = (
        "_args",
        "_args_json",
        "_meta",
        "_meta_json",
        "attempt",
        "id",
        "max_attempts",
        "priority",
        "queue",
        "task",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        id: int | None,
        task: str,
        queue: str,
        attempt: int,
        args_json: str,
        meta_json: str | None,
        priority: int = 0,
        max_attempts: int = 1,
        workflow_id: int | None = None,
    ) -> None:
        self.id = id
        self.task = task
        self.queue = queue
        self.attempt = attempt
        self.priority = priority
        self.max_attempts = max_attempts
        self.workflow_id = workflow_id
        self._args_json = args_json
        self._meta_json = meta_json
        self._args: dict[str, Any] | None = None
        self._meta: dict[str, Any] | None = None

    @classmethod
    def of_claimed(cls, job: ClaimedJob) -> JobInfo:
        """The job of an attempt a worker claimed."""
        return cls(
            id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            args_json=job.payload_json,
            meta_json=job.meta_json,
            priority=job.priority,
            max_attempts=job.max_attempts,
            workflow_id=job.workflow_id,
        )

    @property
    def args(self) -> dict[str, Any]:
        """The task's arguments (a fresh dict each job: changing it changes nothing)."""
        if self._args is None:
            self._args = json.loads(self._args_json)
        return self._args

    @property
    def meta(self) -> dict[str, Any]:
        """The job's metadata (`jobs.meta`); empty when it has none."""
        if self._meta is None:
            self._meta = {} if self._meta_json is None else json.loads(self._meta_json)
        return self._meta

    @property
    def meta_changed(self) -> bool:
        """Whether `meta` was read (and so may have been changed) since it was stored."""
        return self._meta is not None

    def __repr__(self) -> str:
        return (
            f"JobInfo(id={self.id}, task={self.task!r}, queue={self.queue!r}, "
            f"attempt={self.attempt})"
        )


@dataclass(frozen=True, slots=True)
class Event:
    """What a hook receives. `job` is None for worker events; `worker_id` is None for
    `job_enqueued`; `duration` is the attempt's seconds for the job_* events that end
    one; `exception` is what failed it (`job_retried`, `job_failed`); `retry_in` the
    seconds until the job runs again (`job_retried`, `job_snoozed`)."""

    name: str
    job: JobInfo | None = None
    worker_id: str | None = None
    duration: float | None = None
    exception: BaseException | None = None
    retry_in: float | None = None


Handler = Callable[[Event], Any]
Middleware = Callable[[JobInfo, Callable[[], Any]], Any]
EnqueueMiddleware = Callable[[list[JobInfo]], Any]


class AttemptMiddleware(NamedTuple):
    """The middleware of `def` tasks and of `async def` tasks, outermost first."""

    sync: tuple[Middleware, ...] = ()
    asynchronous: tuple[Middleware, ...] = ()


NO_MIDDLEWARE = AttemptMiddleware()


class Hooks:
    """An App's handlers and middleware (`App.on`, `App.middleware`,
    `App.enqueue_middleware` register here)."""

    def __init__(self) -> None:
        self.handlers: dict[str, tuple[Handler, ...]] = {}
        self.attempt_middleware = NO_MIDDLEWARE
        self.enqueue_middleware: tuple[Callable[[list[JobInfo]], Any], ...] = ()

    def on(self, name: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as a handler of event `name`."""
        if name not in EVENT_NAMES:
            raise ValueError(
                f"unknown event {name!r}; the events are {', '.join(sorted(EVENT_NAMES))}"
            )

        def register(handler: Handler) -> Handler:
            _check_callable(handler, f"a handler of {name!r}")
            self.handlers[name] = (*self.handlers.get(name, ()), handler)
            return handler

        return register

    def add_middleware(self, middleware: Middleware) -> Middleware:
        """Wrap every attempt of a `def` task (or, for an `async def`, of an async one)."""
        _check_callable(middleware, "a middleware")
        current = self.attempt_middleware
        if inspect.iscoroutinefunction(middleware):
            self.attempt_middleware = current._replace(
                asynchronous=(*current.asynchronous, middleware)
            )
        else:
            self.attempt_middleware = current._replace(sync=(*current.sync, middleware))
        return middleware

    def add_enqueue_middleware(self, middleware: EnqueueMiddleware) -> EnqueueMiddleware:
        """Run before (and, as a generator, around) the write of every enqueue."""
        _check_callable(middleware, "an enqueue middleware")
        if inspect.iscoroutinefunction(middleware) or inspect.isasyncgenfunction(middleware):
            raise TypeError(
                f"enqueue middleware {handler_name(middleware)} must be a plain function "
                "or a generator function: it runs for sync and async enqueues alike"
            )
        self.enqueue_middleware = (*self.enqueue_middleware, middleware)
        return middleware

    def wants(self, name: str) -> bool:
        """Whether event `name` has a handler."""
        return name in self.handlers

    @property
    def producing(self) -> bool:
        """Whether an enqueue has anything to run: enqueue middleware or handlers."""
        return bool(self.enqueue_middleware) or "job_enqueued" in self.handlers

    @contextmanager
    def around_enqueue(self, jobs: list[JobInfo]) -> Iterator[None]:
        """Run the enqueue middleware over `jobs`, in registration order, around the
        write that happens inside this block. An error of a middleware is raised to the
        caller: nothing is written (it may be deliberate, a refused job)."""
        if not self.enqueue_middleware:
            yield
            return
        with _stacked(self.enqueue_middleware, jobs):
            yield

    def deliver(self, event: Event) -> None:
        """Call every handler of `event` here and now (an async one to its end, or, when
        a loop runs in this thread, as a task of that loop)."""
        for handler in self.handlers.get(event.name, ()):
            self.call(handler, event, finish_awaitable)

    async def deliver_async(self, event: Event) -> None:
        """`deliver` from async code: async handlers are awaited."""
        for handler in self.handlers.get(event.name, ()):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("hook failed", extra=_hook_fields(handler, event))

    @staticmethod
    def call(handler: Handler, event: Event, finish: Callable[[Awaitable[Any]], None]) -> None:
        """Call one handler; `finish` runs what an async one returns. An exception is
        logged with the hook's and the job's names, never raised."""
        try:
            result = handler(event)
            if inspect.isawaitable(result):
                finish(result)
        except Exception:
            log.exception("hook failed", extra=_hook_fields(handler, event))


@contextmanager
def _stacked(middleware: tuple[EnqueueMiddleware, ...], jobs: list[JobInfo]) -> Iterator[None]:
    """Enter each enqueue middleware as a context (a generator) or call it (a function)."""
    if not middleware:
        yield
        return
    first, rest = middleware[0], middleware[1:]
    if inspect.isgeneratorfunction(first):
        with contextmanager(first)(jobs), _stacked(rest, jobs):
            yield
    else:
        first(jobs)
        with _stacked(rest, jobs):
            yield


def run_through(chain: tuple[Middleware, ...], job: JobInfo, task: Callable[[], Any]) -> Any:
    """Call `task` through the middleware `chain`, outermost first. A middleware that
    returns without calling `call_next` fails the attempt (`MiddlewareError`): the task
    did not run, so the job must not count as done."""

    def at(level: int) -> Any:
        if level == len(chain):
            return task()
        middleware = chain[level]
        called = False

        def call_next() -> Any:
            nonlocal called
            called = True
            return at(level + 1)

        value = middleware(job, call_next)
        if not called:
            raise _not_called(middleware)
        return value

    return at(0)


async def run_through_async(
    chain: tuple[Middleware, ...], job: JobInfo, task: Callable[[], Awaitable[Any]]
) -> Any:
    """`run_through` for an `async def` task and `async def` middleware."""

    async def at(level: int) -> Any:
        if level == len(chain):
            return await task()
        middleware = chain[level]
        called = False

        def call_next() -> Awaitable[Any]:
            nonlocal called
            called = True
            return at(level + 1)

        value = await middleware(job, call_next)
        if not called:
            raise _not_called(middleware)
        return value

    return await at(0)


def _not_called(middleware: Callable[..., Any]) -> MiddlewareError:
    return MiddlewareError(
        f"middleware {handler_name(middleware)} returned without calling call_next(): the "
        "task did not run (raise FailJob or SnoozeJob to skip a job on purpose)"
    )


def _check_callable(function: object, what: str) -> None:
    if not callable(function):
        raise TypeError(f"{what} must be callable, got {function!r}")


def handler_name(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{qualname}" if module else qualname


def _hook_fields(handler: Handler, event: Event) -> dict[str, Any]:
    fields: dict[str, Any] = {"hook": handler_name(handler), "event": event.name}
    if event.job is not None:
        fields.update(job_id=event.job.id, task=event.job.task, queue=event.job.queue)
    return fields


_background: set[asyncio.Task[Any]] = set()  # tasks of async handlers, kept alive


def finish_awaitable(awaitable: Awaitable[Any]) -> None:
    """Run an async handler's awaitable from sync code: to its end when no loop runs in
    this thread, else as a task of the running loop (a sync enqueue inside async code)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_awaited(awaitable))
        return
    task = loop.create_task(_awaited(awaitable))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable
