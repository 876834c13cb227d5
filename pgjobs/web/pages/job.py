"""One job: its columns, arguments (as `redact` lets them be shown), result, every
attempt with its error and traceback, its timing, and its place in its workflow; retry,
cancel and delete as its state allows (the jobs list's actions, for one id)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs.data.dashboard_jobs import DashboardJobs
from pgjobs.types import CANCELLABLE_STATES, FINISHED_STATES, RETRYABLE_STATES, Job, JobState
from pgjobs.web.dashboard import BadRequest, Dashboard, page
from pgjobs.web.pages.jobs import parse_id


def routes(dashboard: Dashboard) -> list[Route]:
    return [Route("/jobs/{job_id}", page(dashboard, show), name="job")]


def show(dashboard: Dashboard, request: Request) -> Response:
    job_id = parse_id(request.path_params["job_id"])
    statements = DashboardJobs(dashboard.app.data.sql)
    with dashboard.reading() as conn:
        job = dashboard.app.data.inspect.get_job(conn, job_id)
        if job is None:
            raise BadRequest(f"no job with id {job_id}", 404)
        related = statements.related(conn, job.workflow_id, job.id, job.depends_on or ())
        workflow_busy = bool(
            job.workflow_id and statements.unfinished_workflows(conn, [job.workflow_id])
        )
    context = {
        "job": job,
        "args": dashboard.args_shown(job.task, job.payload),
        "attempts": [_attempt(entry) for entry in job.errors],
        "timing": timing(job, datetime.now(timezone.utc)),
        "related": related,
        "can_retry": job.state in RETRYABLE_STATES,
        "can_cancel": job.state in CANCELLABLE_STATES,
        "can_delete": job.state in FINISHED_STATES and not workflow_busy,
        "workflow_busy": workflow_busy,
    }
    return dashboard.render(request, "job.html", context)


def _attempt(entry: Any) -> dict[str, Any]:
    """An element of `errors`, its `at` read as a moment when it is one."""
    if not isinstance(entry, dict):
        return {"error": str(entry)}
    at = entry.get("at")
    if isinstance(at, str):
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(at)
    return {**entry, "at": at}


def timing(job: Job, now: datetime) -> list[tuple[str, timedelta]]:
    """How long the job waited and ran, as far as its columns tell."""
    found = []
    if job.started_at is not None:
        waited = job.started_at - min(job.run_at, job.started_at)
        found.append(("waited to start (since due)", waited))
        end = job.finished_at or (now if job.state is JobState.RUNNING else None)
        if end is not None:
            found.append(("ran for" if job.finished_at else "running for", end - job.started_at))
    if job.finished_at is not None:
        found.append(("from enqueue to finish", job.finished_at - job.created_at))
    elif job.state is JobState.AVAILABLE and job.run_at <= now:
        found.append(("waiting for a worker since due", now - job.run_at))
    return found
