"""pgjobs: a durable background-job queue on PostgreSQL.

Enqueue inside your own transaction, run `pgjobs work`, inspect with plain SQL.

The public names are imported on first use, so that `import pgjobs` (and so every
`pgjobs` command, `--help` included) does not pay for psycopg until it needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgjobs.app import (
        App as App,
    )
    from pgjobs.enqueue import (
        EnqueueOptions as EnqueueOptions,
    )
    from pgjobs.enqueue import (
        JobOptions as JobOptions,
    )
    from pgjobs.errors import (
        ConfigurationError as ConfigurationError,
    )
    from pgjobs.errors import (
        DatabaseUnavailableError as DatabaseUnavailableError,
    )
    from pgjobs.errors import (
        EmbeddedUnavailableError as EmbeddedUnavailableError,
    )
    from pgjobs.errors import (
        FailJob as FailJob,
    )
    from pgjobs.errors import (
        InvalidJobError as InvalidJobError,
    )
    from pgjobs.errors import (
        InvalidScheduleError as InvalidScheduleError,
    )
    from pgjobs.errors import (
        InvalidTaskError as InvalidTaskError,
    )
    from pgjobs.errors import (
        InvalidWorkflowError as InvalidWorkflowError,
    )
    from pgjobs.errors import (
        JobCancelledError as JobCancelledError,
    )
    from pgjobs.errors import (
        JobFailedError as JobFailedError,
    )
    from pgjobs.errors import (
        JobNotFoundError as JobNotFoundError,
    )
    from pgjobs.errors import (
        JobStateError as JobStateError,
    )
    from pgjobs.errors import (
        MiddlewareError as MiddlewareError,
    )
    from pgjobs.errors import (
        PayloadNotSerializableError as PayloadNotSerializableError,
    )
    from pgjobs.errors import (
        PgJobsError as PgJobsError,
    )
    from pgjobs.errors import (
        QueueFull as QueueFull,
    )
    from pgjobs.errors import (
        ResultNotStorableError as ResultNotStorableError,
    )
    from pgjobs.errors import (
        SchemaBehindError as SchemaBehindError,
    )
    from pgjobs.errors import (
        SchemaNotMigratedError as SchemaNotMigratedError,
    )
    from pgjobs.errors import (
        SnoozeJob as SnoozeJob,
    )
    from pgjobs.errors import (
        UnknownTaskError as UnknownTaskError,
    )
    from pgjobs.hooks import (
        Event as Event,
    )
    from pgjobs.hooks import (
        JobInfo as JobInfo,
    )
    from pgjobs.retry import (
        Backoff as Backoff,
    )
    from pgjobs.tasks import (
        JobContext as JobContext,
    )
    from pgjobs.tasks import (
        Task as Task,
    )
    from pgjobs.types import (
        Job as Job,
    )
    from pgjobs.types import (
        JobState as JobState,
    )
    from pgjobs.workflows import (
        Step as Step,
    )
    from pgjobs.workflows import (
        Workflow as Workflow,
    )
    from pgjobs.workflows import (
        chain as chain,
    )
    from pgjobs.workflows import (
        group as group,
    )

_HOMES = {
    "Event": "pgjobs.hooks",
    "JobInfo": "pgjobs.hooks",
    "MiddlewareError": "pgjobs.errors",
    "group": "pgjobs.workflows",
    "chain": "pgjobs.workflows",
    "Step": "pgjobs.workflows",
    "Workflow": "pgjobs.workflows",
    "ResultNotStorableError": "pgjobs.errors",
    "JobFailedError": "pgjobs.errors",
    "JobCancelledError": "pgjobs.errors",
    "InvalidWorkflowError": "pgjobs.errors",
    "App": "pgjobs.app",
    "Backoff": "pgjobs.retry",
    "ConfigurationError": "pgjobs.errors",
    "DatabaseUnavailableError": "pgjobs.errors",
    "EmbeddedUnavailableError": "pgjobs.errors",
    "EnqueueOptions": "pgjobs.enqueue",
    "FailJob": "pgjobs.errors",
    "InvalidJobError": "pgjobs.errors",
    "InvalidScheduleError": "pgjobs.errors",
    "InvalidTaskError": "pgjobs.errors",
    "Job": "pgjobs.types",
    "JobContext": "pgjobs.tasks",
    "JobNotFoundError": "pgjobs.errors",
    "JobOptions": "pgjobs.enqueue",
    "JobState": "pgjobs.types",
    "JobStateError": "pgjobs.errors",
    "PayloadNotSerializableError": "pgjobs.errors",
    "PgJobsError": "pgjobs.errors",
    "QueueFull": "pgjobs.errors",
    "SchemaBehindError": "pgjobs.errors",
    "SchemaNotMigratedError": "pgjobs.errors",
    "SnoozeJob": "pgjobs.errors",
    "Task": "pgjobs.tasks",
    "UnknownTaskError": "pgjobs.errors",
}

__all__ = sorted(_HOMES)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    try:
        home = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module 'pgjobs' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
