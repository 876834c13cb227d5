"""Tasks: a registered function plus its defaults, and the per-call options builder."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from pgjobs.bounds import check_seconds
from pgjobs.enqueue import NO_OPTIONS, EnqueueOptions, JobOptions, Unpack
from pgjobs.errors import InvalidJobError, InvalidTaskError
from pgjobs.limits import TaskLimits
from pgjobs.retry import Backoff
from pgjobs.storable import text_is_storable
from pgjobs.types import CallerConnection

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class JobContext:
    """What a task that asks for it (`pass_context=True`) learns about its attempt.

    `stop` is set when the job is cancelled, times out, or the worker shuts down; a
    long task should check `ctx.should_stop()` and return early. An `async def` task can
    also `await ctx.wait_stop()` (it is cancelled as well, so it need not).
    """

    job_id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    deadline: float | None  # time.monotonic() value, None without a timeout
    worker_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    scheduled_at: datetime | None = None  # a periodic job's tick (aware, UTC)
    workflow_id: int | None = None  # a workflow step's workflow
    # How a workflow's step reaches its workflow (set by the worker for steps only).
    step_access: StepAccess | None = field(default=None, repr=False, compare=False)
    # Bound by the first `wait_stop`, to the loop it runs on.
    _stopped: asyncio.Event | None = field(default=None, repr=False, compare=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False, compare=False)

    @property
    def results(self) -> dict[str, Any]:
        """A workflow step's dependencies' stored results, by step name (None for a
        dependency that stores none, or that failed under `run_if="finished"`)."""
        return self._steps().results()

    def add_step(
        self,
        task: Any,
        /,
        *,
        after: Iterable[str | int] = (),
        name: str | None = None,
        run_if: str = "completed",
        options: Mapping[str, Any] | None = None,
        **arguments: Any,
    ) -> int:
        """Add a step to this step's workflow, committed at once; its job id.

        `task` is a task or a task name; `after` names existing steps of the workflow
        (by step name or job id; this step's own name, `ctx.step`, makes the new step
        wait until this one completes). Adding is idempotent by step name, so a retried
        attempt that adds the same steps again gets the ids of the first ones. A step
        added without a `name` is named after this step and its task.
        """
        return self._steps().add(
            task, after=after, name=name, run_if=run_if, options=options, arguments=arguments
        )

    @property
    def step(self) -> str:
        """This workflow step's name."""
        return self._steps().name()

    def _steps(self) -> StepAccess:
        if self.step_access is None:
            raise RuntimeError(f"job {self.job_id} is not a workflow step")
        return self.step_access

    def should_stop(self) -> bool:
        """True once the worker wants this attempt to end."""
        return self.stop.is_set()

    def request_stop(self) -> None:
        """Set `stop` and wake `wait_stop`; from any thread (the worker calls it)."""
        self.stop.set()
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(stopped.set)

    async def wait_stop(self, timeout: float | None = None) -> bool:
        """Wait until the worker wants this attempt to end, or `timeout` seconds pass;
        True if it does (the awaitable `ctx.stop.wait(timeout)`)."""
        if self._stopped is None:
            self._stopped = asyncio.Event()
            self._loop = asyncio.get_running_loop()
        # Checked after binding: a `request_stop` that ran before it saw no loop to wake.
        if self.stop.is_set():
            return True
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class StepAccess(Protocol):
    """What a workflow step's context reads and adds through (pgjobs.workflow_steps)."""

    def results(self) -> dict[str, Any]:
        """The dependencies' results by step name."""

    def name(self) -> str:
        """The step's name."""

    def add(
        self,
        task: Any,
        *,
        after: Iterable[str | int],
        name: str | None,
        run_if: str,
        options: Mapping[str, Any] | None,
        arguments: Mapping[str, Any],
    ) -> int:
        """Add a step to the workflow; its job id."""


class Enqueuer(Protocol):
    """What a task enqueues through: its App (typed by what it does, so that this module
    need not import the App that imports it). See `App.enqueue` for the arguments."""

    def enqueue(self, conn: Any, name: str, payload: Any = None, *, options: Any = None) -> int:
        """Enqueue a job of task `name`; its id."""

    async def enqueue_async(
        self, conn: Any, name: str, payload: Any = None, *, options: Any = None
    ) -> int:
        """`enqueue` from async code."""


class Task(Generic[P, R]):
    """A function registered with an App; call it directly or `.enqueue()` it."""

    def __init__(
        self,
        app: Enqueuer,
        func: Callable[P, R],
        *,
        name: str,
        options: JobOptions,
        timeout: float | None,
        backoff: Backoff | None,
        pass_context: bool,
        store_result: bool = False,
        result_max_bytes: int = 1_048_576,
        limits: TaskLimits | None = None,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.defaults = options
        self.timeout = timeout
        self.backoff = backoff
        self.pass_context = pass_context
        self.store_result = store_result
        self.result_max_bytes = result_max_bytes
        self.limits = limits  # concurrency and rate limits (pgjobs.limits)
        self.limit_keys = limits.keys if limits is not None else ()
        self.signature = inspect.signature(func)
        self._keywords = _keyword_shape(self.signature, pass_context)
        self.is_async = inspect.iscoroutinefunction(func)
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
        return TaskCall(self, NO_OPTIONS).enqueue(conn, **kwargs)

    async def enqueue_async(self, conn: CallerConnection, /, **kwargs: Any) -> int:
        """`enqueue` from async code, on an async connection (or None); returns its id."""
        return await TaskCall(self, NO_OPTIONS).enqueue_async(conn, **kwargs)

    def missing_limit_key(self, payload: Mapping[str, Any]) -> str | None:
        """The first argument that picks a limit's bucket and `payload` lacks, if any."""
        return next((key for key in self.limit_keys if key not in payload), None)

    def check_arguments(self, payload: Mapping[str, Any]) -> None:
        """Raise `InvalidJobError` when `payload` does not fit the function's signature.

        Checked at enqueue, so a job that could never run is refused rather than
        retried for hours.
        """
        key = self.missing_limit_key(payload)
        if key is not None:
            raise InvalidJobError(
                f"task {self.name} is limited per value of its argument {key!r}, "
                f"which these arguments {sorted(payload)} do not give"
            )
        if self._keywords is not None:
            required, accepted = self._keywords
            names = payload.keys()
            if required <= names and names <= accepted:
                return  # the common case, without binding a signature per job
        leading = (None,) if self.pass_context else ()
        try:
            self.signature.bind(*leading, **payload)
        except TypeError as error:
            raise InvalidJobError(
                f"arguments {sorted(payload)} do not fit task {self.name}: {error}"
            ) from None


def _keyword_shape(
    signature: inspect.Signature, pass_context: bool
) -> tuple[frozenset[str], frozenset[str]] | None:
    """(required, accepted) keyword names of a task taking plain keyword arguments;
    None when its signature needs a full bind (*args, **kwargs, positional-only)."""
    parameters = list(signature.parameters.values())[1 if pass_context else 0 :]
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind not in keyword_kinds for p in parameters):
        return None
    required = frozenset(p.name for p in parameters if p.default is inspect.Parameter.empty)
    return required, frozenset(p.name for p in parameters)


def check_task_function(name: str, func: Callable[..., Any], timeout: float | None) -> float | None:
    """Refuse what a worker could not run as a task, at declaration; the timeout in seconds.

    A plain function runs on a thread, an `async def` on the worker's event loop; a
    generator's body would never run.
    """
    if inspect.isasyncgenfunction(func):
        raise InvalidTaskError(
            f"task {name!r} is an async generator function; calling it would run none of "
            "its body (declare it with async def and return instead of yield)"
        )
    if inspect.isgeneratorfunction(func):
        raise InvalidTaskError(
            f"task {name!r} is a generator function; calling it would run none of its body"
        )
    if timeout is None:
        return None
    return check_seconds(
        f"timeout of task {name!r}", timeout, exclusive=True, error=InvalidTaskError
    )


def check_task_name(name: object) -> None:
    """Refuse a name given on purpose that no job could carry (empty, blank, a NUL)."""
    if not isinstance(name, str) or not name.strip() or not text_is_storable(name):
        raise InvalidTaskError(
            f"task name must be a non-empty string PostgreSQL can store, got {name!r}"
        )


@dataclass(frozen=True)
class TaskCall:
    """A task with per-call options, ready to enqueue."""

    task: Task[Any, Any]
    options: JobOptions

    def enqueue(self, conn: CallerConnection, /, **kwargs: Any) -> int:
        """Insert one job; returns its id (or the holder's id for a taken unique_key)."""
        return self.task.app.enqueue(conn, self.task.name, kwargs, options=self.options)

    async def enqueue_async(self, conn: CallerConnection, /, **kwargs: Any) -> int:
        """`enqueue` from async code, on an async connection (or None)."""
        return await self.task.app.enqueue_async(conn, self.task.name, kwargs, options=self.options)
