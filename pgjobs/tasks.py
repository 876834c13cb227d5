"""Tasks: a registered function plus its defaults, and the per-call options builder."""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from pgjobs.db import CallerConnection
from pgjobs.enqueue import EnqueueOptions, JobOptions, Unpack
from pgjobs.errors import InvalidJobError, InvalidTaskError
from pgjobs.retry import Backoff

if TYPE_CHECKING:
    from pgjobs.app import App

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class JobContext:
    """What a task that asks for it (`pass_context=True`) learns about its attempt.

    `stop` is set when the job is cancelled, times out, or the worker shuts down; a
    long task should check `ctx.should_stop()` and return early.
    """

    job_id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    deadline: float | None  # time.monotonic() value, None without a timeout
    worker_id: str
    stop: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        """True once the worker wants this attempt to end."""
        return self.stop.is_set()


class Task(Generic[P, R]):
    """A function registered with an App; call it directly or `.enqueue()` it."""

    def __init__(
        self,
        app: App,
        func: Callable[P, R],
        *,
        name: str,
        options: JobOptions,
        timeout: float | None,
        backoff: Backoff | None,
        pass_context: bool,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.defaults = options
        self.timeout = timeout
        self.backoff = backoff
        self.pass_context = pass_context
        self.signature = inspect.signature(func)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function in-process, as if it were not a task."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def options(self, **options: Unpack[EnqueueOptions]) -> TaskCall:
        """Options for one enqueue, e.g. `task.options(delay=60).enqueue(conn, ...)`."""
        return TaskCall(self, JobOptions(**options))

    def enqueue(self, conn: CallerConnection, /, **kwargs: Any) -> int:
        """Insert one job with these keyword arguments; returns its id."""
        return TaskCall(self, JobOptions()).enqueue(conn, **kwargs)

    def check_arguments(self, payload: Mapping[str, Any]) -> None:
        """Raise `InvalidJobError` when `payload` does not fit the function's signature.

        Checked at enqueue, so a job that could never run is refused rather than
        retried for hours.
        """
        leading = (None,) if self.pass_context else ()
        try:
            self.signature.bind(*leading, **payload)
        except TypeError as error:
            raise InvalidJobError(
                f"arguments {sorted(payload)} do not fit task {self.name}: {error}"
            ) from None


def check_task_function(name: str, func: Callable[..., Any], timeout: float | None) -> None:
    """Refuse what a worker thread could not run as a task, at declaration."""
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        raise InvalidTaskError(
            f"task {name!r} is an async function; pgjobs runs tasks on threads, so declare "
            "it with def (async tasks are not supported yet)"
        )
    if inspect.isgeneratorfunction(func):
        raise InvalidTaskError(
            f"task {name!r} is a generator function; calling it would run none of its body"
        )
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidTaskError(
            f"timeout of task {name!r} must be a finite number of seconds > 0, got {timeout!r}"
        )


@dataclass(frozen=True)
class TaskCall:
    """A task with per-call options, ready to enqueue."""

    task: Task[Any, Any]
    options: JobOptions

    def enqueue(self, conn: CallerConnection, /, **kwargs: Any) -> int:
        """Insert one job; returns its id (or the holder's id for a taken unique_key)."""
        return self.task.app.enqueue(conn, self.task.name, kwargs, options=self.options)
