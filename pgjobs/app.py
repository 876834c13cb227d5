"""The App: the task registry, the producer API and the way to the database."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, overload

from pgjobs.config import resolve_schema
from pgjobs.db import CallerConnection, Database
from pgjobs.enqueue import JobOptions, JobRow, build_row, insert_jobs
from pgjobs.errors import UnknownTaskError
from pgjobs.queries import Queries
from pgjobs.retry import Backoff
from pgjobs.schema import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE
from pgjobs.tasks import P, R, Task

# An item of `enqueue_many`: (task name, arguments) or (task name, arguments, options).
BulkItem = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, Any]]


class App:
    """A pgjobs application: where tasks are registered and jobs enqueued.

    `database_url` and `schema` default to `PGJOBS_DATABASE_URL` (then `DATABASE_URL`)
    and `PGJOBS_SCHEMA`; with no URL at all the embedded local cluster is used. Nothing
    connects until the first enqueue without a caller connection, or a worker starts.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str | None = None,
        backoff: Backoff | None = None,
        default_queue: str = DEFAULT_QUEUE,
        default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.schema = resolve_schema(schema)
        self.database = Database(database_url)
        self.queries = Queries(self.schema)
        self.backoff = backoff or Backoff()
        self.defaults = JobOptions(
            queue=default_queue, priority=0, max_attempts=default_max_attempts
        )
        self.tasks: dict[str, Task[Any, Any]] = {}

    def configure(self, *, database_url: str | None = None, schema: str | None = None) -> None:
        """Point the App at another database or schema (the CLI's options win over code)."""
        if database_url is not None:
            self.database.close()
            self.database = Database(database_url)
        if schema is not None:
            self.schema = resolve_schema(schema)
            self.queries = Queries(self.schema)

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
    ) -> Any:
        """Register a function as a task, as `@app.task` or `@app.task(...)`.

        The name defaults to `<module>.<function>`. `timeout` is in seconds; `backoff`
        overrides the app's retry policy; with `pass_context=True` the function receives
        a `JobContext` as its first argument.
        """

        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{function.__module__}.{function.__name__}"
            if timeout is not None and timeout <= 0:
                raise ValueError(f"timeout of task {task_name!r} must be > 0 seconds")
            options = JobOptions(queue=queue, priority=priority, max_attempts=max_attempts)
            registered: Task[Any, Any] = Task(
                self,
                function,
                name=task_name,
                options=options.merged_over(self.defaults),
                timeout=timeout,
                backoff=backoff,
                pass_context=pass_context,
            )
            # Validate the defaults once, at import time, rather than at the first enqueue.
            build_row(task_name, {}, registered.defaults)
            self.tasks[task_name] = registered
            return registered

        return register(func) if func is not None else register

    def get_task(self, name: str) -> Task[Any, Any]:
        """The registered task called `name`."""
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(f"unknown task {name!r}") from None

    def _row(self, name: str, payload: Mapping[str, Any], options: JobOptions) -> JobRow:
        task = self.tasks.get(name)
        defaults = task.defaults if task is not None else self.defaults
        return build_row(name, payload, options.merged_over(defaults))

    def enqueue(
        self,
        conn: CallerConnection,
        name: str,
        payload: Mapping[str, Any] | None = None,
        *,
        options: JobOptions | None = None,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        max_attempts: int | None = None,
        unique_key: str | None = None,
    ) -> int:
        """Enqueue a job by task name, in `conn`'s transaction (or at once with None).

        The task need not be registered here: producers may not import the task code.
        Returns the new job's id, or the id of the unfinished job holding `unique_key`.
        """
        call_options = JobOptions(queue, priority, run_at, delay, max_attempts, unique_key)
        if options is not None:
            call_options = call_options.merged_over(options)
        row = self._row(name, payload or {}, call_options)
        return insert_jobs(conn, self.database, self.queries, [row])[0]

    def enqueue_many(self, conn: CallerConnection, items: Iterable[BulkItem]) -> list[int]:
        """Enqueue many jobs in one statement; returns their ids in the same order.

        Each item is `(task_name, arguments)` or `(task_name, arguments, options)` where
        options is a dict of the `enqueue` keyword options. Every item is validated before
        anything is written.
        """
        rows = []
        for item in items:
            name, payload, *rest = item
            options = JobOptions(**rest[0]) if rest else JobOptions()
            rows.append(self._row(name, payload, options))
        return insert_jobs(conn, self.database, self.queries, rows)

    def close(self) -> None:
        """Close pgjobs' own connection pool (the App can be used again afterwards)."""
        self.database.close()
