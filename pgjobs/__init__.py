"""pgjobs: a durable background-job queue on PostgreSQL.

Enqueue inside your own transaction, run `pgjobs work`, inspect with plain SQL.
"""

from pgjobs.app import App
from pgjobs.enqueue import JobOptions
from pgjobs.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    FailJob,
    InvalidJobError,
    JobNotFoundError,
    PayloadNotSerializableError,
    PgJobsError,
    SchemaNotMigratedError,
    SnoozeJob,
    UnknownTaskError,
)
from pgjobs.retry import Backoff
from pgjobs.tasks import JobContext, Task

__all__ = [
    "App",
    "Backoff",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "FailJob",
    "InvalidJobError",
    "JobContext",
    "JobNotFoundError",
    "JobOptions",
    "PayloadNotSerializableError",
    "PgJobsError",
    "SchemaNotMigratedError",
    "SnoozeJob",
    "Task",
    "UnknownTaskError",
]

__version__ = "0.1.0"
