"""Test helpers, one definition each; import them from here.

- `waiting`: `wait_until`, `stays_true` (poll a condition instead of sleeping).
- `workers`: `WorkerProcess`, a real `pgjobs work` subprocess on a test schema.
- `rows`: the jobs and runs tables as dicts; jobs in known states; jobs_live's scan counts.
- `cli`: `run_cli` (in-process) and `pgjobs` (a real process), `the_error_line`.
- `outages`: statements that survive a restart, backend terminations, fleets of workers.
- `fixtures`: the `runs_table` and `start_worker` fixtures (registered in conftest).
- `readme`: sections and code blocks of the README and the docs, for tests that run what
  they show.
- `browser`: Debian's Chromium driven by Playwright, for the dashboard's browser tests
  (imported by them alone: `from tests.helpers.browser import ...`).
"""

from tests.helpers.cli import UNREACHABLE_URL, Result, pgjobs, run_cli, the_error_line
from tests.helpers.outages import (
    Fleet,
    lost_worker_errors,
    query,
    run_counts,
    serving,
    state_counts,
    terminate_client_backends,
    unaccounted_attempts,
    worker_pid,
)
from tests.helpers.rows import (
    ERRORS,
    ago,
    cancelled,
    completed,
    create_runs_table,
    failed,
    job,
    job_ids,
    job_row_locked,
    jobs,
    make_job,
    running,
    runs,
    table_scans,
    update_job,
    wait_for_job,
)
from tests.helpers.waiting import stays_true, wait_until
from tests.helpers.workers import REPO_ROOT, WORKER_APP, StartWorker, WorkerProcess

__all__ = [
    "ERRORS",
    "REPO_ROOT",
    "UNREACHABLE_URL",
    "WORKER_APP",
    "Fleet",
    "Result",
    "StartWorker",
    "WorkerProcess",
    "ago",
    "cancelled",
    "completed",
    "create_runs_table",
    "failed",
    "job",
    "job_ids",
    "job_row_locked",
    "jobs",
    "lost_worker_errors",
    "make_job",
    "pgjobs",
    "query",
    "run_cli",
    "run_counts",
    "running",
    "runs",
    "serving",
    "state_counts",
    "stays_true",
    "table_scans",
    "terminate_client_backends",
    "the_error_line",
    "unaccounted_attempts",
    "update_job",
    "wait_for_job",
    "wait_until",
    "worker_pid",
]
