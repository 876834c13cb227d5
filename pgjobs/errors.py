"""Exceptions pgjobs raises for callers, and the two that tasks raise on purpose.

Every error a user can cause (bad input, missing schema, unreachable database) is a
`PgJobsError`, so the CLI can print it as one line while real bugs keep their traceback.
"""

from __future__ import annotations

import shlex

from pgjobs.bounds import MAX_DELAY_SECONDS, check_seconds


class PgJobsError(Exception):
    """Base class of every error pgjobs reports to its caller."""


class ConfigurationError(PgJobsError, ValueError):
    """A setting is missing or malformed (database URL, schema name, option value)."""


class DatabaseUnavailableError(PgJobsError):
    """The configured PostgreSQL server cannot be reached."""


class SchemaNotMigratedError(PgJobsError):
    """The pgjobs schema does not exist yet in the target database."""

    @classmethod
    def for_schema(cls, schema: str, missing: str | None = None) -> SchemaNotMigratedError:
        """The error for `schema`, with what is `missing` if known (the server's words),
        and the exact command that fixes it."""
        what = f" ({missing})" if missing else ""
        return cls(
            f"schema {schema!r} is not migrated{what}: run `{migrate_command(schema)}` first"
        )


class SchemaBehindError(SchemaNotMigratedError):
    """The schema was migrated by an older pgjobs: a migration this version needs is missing.

    `revision` is the schema's Alembic revision and `needed` the one this pgjobs ships.
    """

    def __init__(self, schema: str, revision: str, needed: str) -> None:
        super().__init__(
            f"schema {schema!r} is at revision {revision}, pgjobs needs {needed}: "
            f"run `{migrate_command(schema)}`"
        )
        self.schema = schema
        self.revision = revision
        self.needed = needed


def migrate_command(schema: str) -> str:
    """The command that migrates `schema`, ready to paste."""
    option = "" if schema == "pgjobs" else f" --schema {shlex.quote(schema)}"
    return f"pgjobs migrate{option}"


class EmbeddedUnavailableError(PgJobsError):
    """No PostgreSQL server binaries were found to start the embedded cluster."""


class InvalidJobError(PgJobsError, ValueError):
    """An enqueue option is invalid (empty task name, naive datetime, negative delay, ...)."""


class InvalidTaskError(PgJobsError, ValueError):
    """A task declaration is invalid (coroutine function, duplicate name, bad timeout)."""


class InvalidScheduleError(PgJobsError, ValueError):
    """A periodic declaration is invalid (bad cron expression, unknown time zone, both or
    neither of cron and every, ...); the message names the task and what is wrong."""


class PayloadNotSerializableError(PgJobsError, TypeError):
    """A task argument cannot be stored as JSON; the message names the argument."""


class UnknownTaskError(PgJobsError, LookupError):
    """A task name is not registered with this App."""


class JobNotFoundError(PgJobsError, LookupError):
    """No job has the requested id."""


class ResultNotStorableError(PgJobsError):
    """A task that stores its result returned a value that is not JSON, or is larger
    than `result_max_bytes`: the attempt fails with this error and retries by policy."""


class JobFailedError(PgJobsError):
    """`App.result`: the job failed for good. `error` is its last error message and
    `traceback` that attempt's traceback text (None when the worker was lost)."""

    def __init__(self, job_id: int, error: str | None, traceback: str | None) -> None:
        super().__init__(f"job {job_id} failed: {error or 'no error recorded'}")
        self.job_id = job_id
        self.error = error
        self.traceback = traceback


class JobCancelledError(PgJobsError):
    """`App.result`: the job was cancelled; `reason` says why when it is known (a
    workflow step whose dependency failed)."""

    def __init__(self, job_id: int, reason: str | None = None) -> None:
        super().__init__(f"job {job_id} was cancelled" + (f": {reason}" if reason else ""))
        self.job_id = job_id
        self.reason = reason


class InvalidWorkflowError(PgJobsError, ValueError):
    """A workflow's graph or steps are wrong (an unknown step, a step of another
    workflow, a repeated name, no step at all); nothing was enqueued."""


class JobStateError(PgJobsError):
    """Jobs are not in a state that allows the requested change; nothing was changed.

    `problems` maps each offending job id to a sentence saying why.
    """

    def __init__(self, problems: dict[int, str]) -> None:
        super().__init__("\n".join(problems.values()))
        self.problems = problems


class QueueFull(PgJobsError):
    """The queue holds `max_waiting` or more waiting jobs; nothing was enqueued.

    A producer can answer "try again later" (HTTP 503). `queue`, `max_waiting` and
    `waiting` (the count the check used, at most a second old) say which limit was hit.
    """

    def __init__(self, queue: str, max_waiting: int, waiting: int) -> None:
        super().__init__(
            f"queue {queue!r} is full: {waiting} jobs waiting, limit {max_waiting}; "
            "nothing was enqueued"
        )
        self.queue = queue
        self.max_waiting = max_waiting
        self.waiting = waiting


class RunawayJobsError(PgJobsError):
    """`pgjobs.testing`: a drain ran its `max_jobs` attempts and jobs were still due (a
    job that enqueues itself, or snoozes forever?); the one it claimed last was put back."""


class FailJob(Exception):
    """Raise from a task to fail the job at once, with no further attempts."""


class SnoozeJob(Exception):
    """Raise from a task to run it again after `delay` seconds.

    A snooze is not a failure: it adds no entry to `errors` and gives the attempt back by
    raising `max_attempts` by one (the way Oban does), so `attempts` stays the true count
    of attempts started.
    """

    def __init__(self, delay: float) -> None:
        # Checked here, in the task, rather than when the worker stores the new run_at,
        # where a delay PostgreSQL cannot add would fail the job instead.
        seconds = check_seconds("SnoozeJob delay", delay, maximum=MAX_DELAY_SECONDS)
        super().__init__(f"snoozed for {seconds:g}s")
        self.delay = seconds


class MiddlewareError(PgJobsError):
    """A middleware broke its contract (it returned without calling `call_next()`); the
    attempt fails with this error and is retried by its task's policy."""
