"""Helpers for the tests of an application that uses pgjobs, on its real database.

`Jobs(app, conn)` asserts what was enqueued on a connection (committed or not) and runs
the enqueued jobs inline, through the worker's own claim, executor and completer, so
retries, errors, `FailJob`, `SnoozeJob` and timeouts are recorded as a worker records
them. The pytest plugin (`pgjobs.testing.plugin`, registered as `pgjobs`) provides it
as the `jobs` fixture; see docs/testing.md.
"""

from pgjobs.errors import RunawayJobsError
from pgjobs.testing.helper import Jobs
from pgjobs.testing.matching import JobFilters
from pgjobs.testing.runner import RanJob, RunResult
from pgjobs.worker.events import Ending
from pgjobs.worker.periodic import Tick

__all__ = ["Ending", "JobFilters", "Jobs", "RanJob", "RunResult", "RunawayJobsError", "Tick"]
