"""The App: the task registry, the producer API and the way to the database."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pgjobs.bounds import DEFAULT_RESULT_MAX_BYTES, check_result_max_bytes
from pgjobs.config import resolve_schema
from pgjobs.data import producer
from pgjobs.data.connector import run, run_async
from pgjobs.data.layer import DataLayer
from pgjobs.data.producer import Inserted
from pgjobs.data.steps import Plan
from pgjobs.db import DEFAULT_WAIT, Database
from pgjobs.enqueue import (
    NO_OPTIONS,
    EnqueueOptions,
    JobOptions,
    Unpack,
    build_row,
    copies_straight,
    unpack_item,
)
from pgjobs.enqueue_hooks import all_new, same, write, write_async
from pgjobs.errors import (
    ConfigurationError,
    InvalidTaskError,
    UnknownTaskError,
)
from pgjobs.hooks import Hooks
from pgjobs.limits import declare_limits
from pgjobs.queue_limits import QueueLimits
from pgjobs.results import ResultWaiter
from pgjobs.retry import Backoff, check_backoff
from pgjobs.tasks import P, R, Task, check_task_function, check_task_name
from pgjobs.types import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, CallerConnection, JobRow

if TYPE_CHECKING:
    from datetime import timedelta

    from pgjobs.async_db import AsyncDatabase
    from pgjobs.periodic import Schedule

# An item of `enqueue_many`: (task name, arguments) or (task name, arguments, options).
BulkItem = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, Any]]
T = TypeVar("T")


class App:
    """A pgjobs application: where tasks are registered and jobs enqueued.

    `database_url` and `schema` default to `PGJOBS_DATABASE_URL` (then `DATABASE_URL`)
    and `PGJOBS_SCHEMA`; with no URL at all the embedded local cluster is used.
    `database_wait` is how long an enqueue with `conn=None` waits for a connection
    before raising `DatabaseUnavailableError`. `result_max_bytes` caps the JSON of a
    stored result (tasks may set their own). Nothing connects until needed.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str | None = None,
        backoff: Backoff | None = None,
        default_queue: str = DEFAULT_QUEUE,
        default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        database_wait: float = DEFAULT_WAIT,
        result_max_bytes: int = DEFAULT_RESULT_MAX_BYTES,
    ) -> None:
        self.schema = resolve_schema(schema)
        self.database = Database(database_url, wait=database_wait)
        self.data = DataLayer(self.schema)
        self.backoff = check_backoff(backoff, ConfigurationError) or Backoff()
        self.result_max_bytes = check_result_max_bytes(result_max_bytes, ConfigurationError)
        self.defaults = JobOptions(
            queue=default_queue, priority=0, max_attempts=default_max_attempts
        )
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.queue_limits = QueueLimits()  # QueueFull: see pgjobs.queue_limits
        self.schedules: dict[str, Schedule] = {}  # by task name, see `periodic`
        # pgjobs.hooks: `@app.on("job_failed")` registers an event's handler,
        # `@app.middleware` wraps attempts, `@app.enqueue_middleware` sees new jobs.
        self.hooks = Hooks()
        self.on = self.hooks.on
        self.middleware = self.hooks.add_middleware
        self.enqueue_middleware = self.hooks.add_enqueue_middleware
        self._async_database: AsyncDatabase | None = None
        self._results = ResultWaiter(self)  # its thread starts with the first wait

    def configure(self, *, database_url: str | None = None, schema: str | None = None) -> None:
        """Point the App at another database or schema (the CLI's options win over code)."""
        if database_url is not None:
            self.database.close()
            self.database = Database(database_url, wait=self.database.wait)
        if schema is not None:
            self.schema = resolve_schema(schema)
            self.data = DataLayer(self.schema)

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        pass_context: bool = False,
        store_result: bool = False,
        result_max_bytes: int | None = None,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
        rate_limit_key: str | None = None,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        pass_context: bool = False,
        store_result: bool = False,
        result_max_bytes: int | None = None,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
        rate_limit_key: str | None = None,
    ) -> Any:
        """Register a function as a task, as `@app.task` or `@app.task(...)`.

        The name defaults to `<module>.<function>`. `timeout` is in seconds; `backoff`
        overrides the app's retry policy; with `pass_context=True` the function receives
        a `JobContext` as its first argument. With `store_result=True` its return value
        is stored as JSON in `jobs.result` (at most `result_max_bytes`, by default the
        App's) for `App.result` and for the workflow steps that depend on it.
        `concurrency`, `rate_limit` ("N/s", "N/m", "N/h") and their `_key` arguments
        limit its jobs across every worker (see pgjobs.limits).
        """

        if name is not None:
            check_task_name(name)
        check_backoff(backoff, InvalidTaskError)
        max_bytes = check_result_max_bytes(
            self.result_max_bytes if result_max_bytes is None else result_max_bytes,
            InvalidTaskError,
        )

        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{function.__module__}.{function.__name__}"
            seconds = check_task_function(task_name, function, timeout)
            limits = declare_limits(
                task_name,
                function,
                concurrency=concurrency,
                concurrency_key=concurrency_key,
                rate_limit=rate_limit,
                rate_limit_key=rate_limit_key,
            )
            if task_name in self.tasks:
                other = self.tasks[task_name].func
                raise InvalidTaskError(
                    f"task name {task_name!r} is already registered "
                    f"(by {other.__module__}.{other.__qualname__}); give one of them "
                    "another name="
                )
            options = JobOptions(queue=queue, priority=priority, max_attempts=max_attempts)
            registered: Task[Any, Any] = Task(
                self,
                function,
                name=task_name,
                options=options.merged_over(self.defaults),
                timeout=seconds,
                backoff=backoff,
                pass_context=pass_context,
                store_result=store_result,
                result_max_bytes=max_bytes,
                limits=limits,
            )
            # Validate the defaults once, at import time, rather than at the first enqueue.
            build_row(task_name, {}, registered.defaults)
            self.tasks[task_name] = registered
            return registered

        return register(func) if func is not None else register

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str = "UTC",
        args: Mapping[str, Any] | None = None,
        max_lateness: float | timedelta | None = None,
    ) -> Callable[[Task[P, R]], Task[P, R]]:
        """Run a task on a schedule, stacked above `@app.task`.

        Exactly one of `cron` (5 fields, in the IANA `timezone`) and `every` (seconds or a
        timedelta, at least 1 s). `args` are each job's arguments. A tick found more than
        `max_lateness` late is skipped; by default the latest due tick is enqueued however
        late. Anything invalid raises `InvalidScheduleError` here, at import.
        """
        from pgjobs.periodic import add_schedule, declare_schedule

        def schedule(task: Task[P, R]) -> Task[P, R]:
            declared = declare_schedule(
                task,
                cron=cron,
                every=every,
                timezone=timezone,
                args=args,
                max_lateness=max_lateness,
            )
            add_schedule(declared, self.schedules, self.tasks)
            return task

        return schedule

    def get_task(self, name: str) -> Task[Any, Any]:
        """The registered task called `name`."""
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(f"unknown task {name!r}") from None

    def _row(self, name: str, payload: Mapping[str, Any], options: JobOptions) -> JobRow:
        task = self.tasks.get(name)
        if task is None:
            return build_row(name, payload, options.merged_over(self.defaults))
        task.check_arguments(payload)
        return build_row(name, payload, options.merged_over(task.defaults))

    def enqueue(
        self,
        conn: CallerConnection,
        name: str,
        payload: Mapping[str, Any] | None = None,
        *,
        options: JobOptions | None = None,
        **call_options: Unpack[EnqueueOptions],
    ) -> int:
        """Enqueue a job by task name, in `conn`'s transaction (or at once with None).

        The task need not be registered here: producers may not import the task code.
        When it is, its defaults apply and the arguments are checked against its
        signature. Returns the new job's id, or the id of the unfinished job holding
        `unique_key`. Raises `QueueFull`, writing nothing, when the queue is at its limit.
        """
        row = self._call_row(name, payload, options, call_options)
        return self._write(conn, [row])[0]

    def enqueue_many(self, conn: CallerConnection, items: Iterable[BulkItem]) -> list[int]:
        """Enqueue many jobs; returns their ids in the same order.

        Each item is `(task_name, arguments)` or `(task_name, arguments, options)` where
        options is a dict of the `enqueue` keyword options. All or nothing: an item that
        fails validation raises and none of the batch is written (a large batch of plain
        jobs is checked while it streams, inside a savepoint that the error rolls back).
        """
        items = items if isinstance(items, Sequence) else list(items)
        if self.hooks.producing or not copies_straight(items):
            return self._write(conn, [self._bulk_row(item) for item in items])
        return self._run(conn, self._copy_many(items))

    async def enqueue_async(
        self,
        conn: CallerConnection,
        name: str,
        payload: Mapping[str, Any] | None = None,
        *,
        options: JobOptions | None = None,
        **call_options: Unpack[EnqueueOptions],
    ) -> int:
        """`enqueue` from async code: `conn` is a psycopg AsyncConnection, a SQLAlchemy
        AsyncConnection or AsyncSession, or None (pgjobs' own asyncio pool, committed at
        once). Validated before anything is sent, like `enqueue`."""
        row = self._call_row(name, payload, options, call_options)
        return (await self._write_async(conn, [row]))[0]

    async def enqueue_many_async(
        self, conn: CallerConnection, items: Iterable[BulkItem]
    ) -> list[int]:
        """`enqueue_many` from async code; `conn` as for `enqueue_async`."""
        items = items if isinstance(items, Sequence) else list(items)
        if self.hooks.producing or not copies_straight(items):
            return await self._write_async(conn, [self._bulk_row(item) for item in items])
        return await self._run_async(conn, self._copy_many(items))

    def _run(self, conn: CallerConnection, plan: Plan[T]) -> T:
        """Run a producer's plan in `conn`'s transaction, or with None in one transaction
        of pgjobs' own pool (the queue-limit check and the insert together)."""
        if conn is None:
            with self.database.transaction() as own:
                return run(own, self.schema, plan)
        return run(conn, self.schema, plan)

    async def _run_async(self, conn: CallerConnection, plan: Plan[T]) -> T:
        """`_run` for async callers, with pgjobs' own asyncio pool for None."""
        if conn is None:
            async with self.async_database.transaction() as own:
                return await run_async(own, self.schema, plan)
        return await run_async(conn, self.schema, plan)

    def _write(self, conn: CallerConnection, rows: Sequence[JobRow]) -> list[int]:
        """Insert `rows` through the enqueue hooks (pgjobs.enqueue_hooks); their ids."""
        run = partial(self._run, conn)
        inserted: Inserted = write(self.hooks, rows, self._insert, same, run)
        return inserted.ids

    async def _write_async(self, conn: CallerConnection, rows: Sequence[JobRow]) -> list[int]:
        run = partial(self._run_async, conn)
        inserted: Inserted = await write_async(self.hooks, rows, self._insert, same, run)
        return inserted.ids

    def _insert(self, rows: Sequence[JobRow]) -> Plan[Inserted]:
        """Check the queues' limits, then insert `rows`; their ids, and which are new. A
        large batch of plain rows, where no queue has a limit, is COPYed straight in."""
        sql = self.data.sql
        plain = len(rows) >= producer.COPY_THRESHOLD and all(map(producer.is_plain_row, rows))
        if plain and not (yield from self.queue_limits.any_limit(sql)):
            return all_new((yield from producer.copy_plain_rows(sql, len(rows), rows)))
        yield from self.queue_limits.check(sql, rows)
        return (yield from producer.insert_new_rows(sql, rows))

    def _copy_many(self, items: Sequence[BulkItem]) -> Plan[list[int]]:
        """Stream a large batch of plain jobs into the table by COPY as it is validated."""
        if not (yield from self.queue_limits.any_limit(self.data.sql)):
            streamed = (self._bulk_row(item) for item in items)
            return (yield from producer.copy_plain_rows(self.data.sql, len(items), streamed))
        return (yield from self._insert([self._bulk_row(item) for item in items])).ids

    @property
    def async_database(self) -> AsyncDatabase:
        """pgjobs' own asyncio pools (one per event loop), for `enqueue_async(None, ...)`."""
        if self._async_database is None or self._async_database.database is not self.database:
            from pgjobs.async_db import AsyncDatabase  # asyncio only where it is used

            self._async_database = AsyncDatabase(self.database)
        return self._async_database

    def _call_row(
        self,
        name: str,
        payload: Mapping[str, Any] | None,
        options: JobOptions | None,
        call_options: EnqueueOptions,
    ) -> JobRow:
        merged = JobOptions(**call_options) if call_options else NO_OPTIONS
        if options is not None:
            merged = merged.merged_over(options)
        return self._row(name, payload or {}, merged)

    def _bulk_row(self, item: BulkItem) -> JobRow:
        return self._row(*unpack_item(item))

    def result(self, job_id: int, timeout: float | timedelta | None = None) -> Any:
        """Wait until job `job_id` finishes; its stored result (None if it stores none).

        Raises JobFailedError, JobCancelledError, JobNotFoundError (no such job visible),
        or TimeoutError after `timeout` seconds (None: no limit). See docs/results.md.
        """
        return self._results.results([job_id], timeout)[0]

    async def result_async(self, job_id: int, timeout: float | timedelta | None = None) -> Any:
        """`result` for asyncio, without blocking the event loop."""
        return await self._results.result_async(job_id, timeout)

    def results(
        self,
        ids: Iterable[int],
        timeout: float | timedelta | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """`result` of many jobs, in the order of `ids`, within one `timeout`; with
        `return_exceptions` a job's JobFailedError, JobCancelledError or JobNotFoundError
        takes its value's place instead of being raised."""
        return self._results.results(ids, timeout, return_exceptions)

    def close(self) -> None:
        """Close pgjobs' own connection pool and the results listener (the App can be
        used again afterwards)."""
        self._results.close()
        self.database.close()

    async def aclose(self) -> None:
        """Close pgjobs' own pools, the running event loop's asyncio one included."""
        if self._async_database is not None:
            await self._async_database.close()
        self.close()
