"""Workflows: the recent ones, newest first, with their steps counted by state; one
workflow's steps in dependency order; cancelling a workflow's unfinished steps."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs import admin
from pgjobs.data.dashboard_jobs import STEP_COUNT_CAP, WORKFLOW_COUNT_CAP, DashboardJobs
from pgjobs.errors import JobNotFoundError
from pgjobs.types import CANCELLABLE_STATES, STATES
from pgjobs.web.dashboard import BadRequest, Dashboard, action, logged, page, redirect, url_of
from pgjobs.web.format import Count
from pgjobs.web.pages.jobs import cursor, parse_id

PAGE_SIZE = 50
STEPS_SHOWN = 500  # a workflow's page lists its first steps, at most this many
UNFINISHED = tuple(state.value for state in CANCELLABLE_STATES)
STATE_ORDER = tuple(state.value for state in STATES)


def routes(dashboard: Dashboard) -> list[Route]:
    return [
        Route("/workflows", page(dashboard, listing), name="workflows"),
        Route("/workflows/{workflow_id}", page(dashboard, show), name="workflow"),
        Route(
            "/workflows/{workflow_id}/cancel",
            action(dashboard, cancel),
            methods=["POST"],
            name="workflow_cancel",
        ),
    ]


def listing(dashboard: Dashboard, request: Request) -> Response:
    params = request.query_params
    before, after = cursor(params, "before"), cursor(params, "after")
    if before is not None and after is not None:
        raise BadRequest("give before= or after=, not both")
    with dashboard.reading() as conn:
        found = DashboardJobs(dashboard.app.data.sql).workflows(
            conn, before=before, after=after, size=PAGE_SIZE
        )
    more = len(found) > PAGE_SIZE
    rows = found[:PAGE_SIZE]
    if after is not None:
        rows.reverse()
    base = url_of(request, "workflows")
    older = newer = None
    if rows and (more or (after is not None and after > 0)):
        older = f"{base}?before={rows[-1]['id']}"
    if rows and (before is not None or (after is not None and more)):
        newer = f"{base}?after={rows[0]['id']}"
    context = {
        "rows": [_summary(row, STEP_COUNT_CAP) for row in rows],
        "older_url": older,
        "newer_url": newer,
        "first_page": before is None and after is None,
        "newest_url": base,
        "cap": STEP_COUNT_CAP,
    }
    return dashboard.render(request, "workflows.html", context)


def _summary(row: dict[str, Any], cap: int) -> dict[str, Any]:
    """A workflow with its counts in state order, its total (capped) and whether it has
    unfinished steps."""
    counts = row["counts"] or {}
    total = int(row["total"])
    return {
        **row,
        "counts": [(state, counts[state]) for state in STATE_ORDER if state in counts],
        "total": Count(total, capped=True) if total >= cap else Count(total),
        "unfinished": any(state in counts for state in UNFINISHED),
    }


def show(dashboard: Dashboard, request: Request) -> Response:
    workflow_id = parse_id(request.path_params["workflow_id"], "workflow")
    with dashboard.reading() as conn:
        found = DashboardJobs(dashboard.app.data.sql).workflow(conn, workflow_id, limit=STEPS_SHOWN)
    if found is None:
        raise BadRequest(f"no workflow with id {workflow_id}", 404)
    context = {
        "workflow": _summary(found, WORKFLOW_COUNT_CAP),
        "steps": in_dependency_order(found["steps"]),
        "shown": min(len(found["steps"]), STEPS_SHOWN),
        "more": found["total"] > STEPS_SHOWN,
    }
    return dashboard.render(request, "workflow.html", context)


def in_dependency_order(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps by level (a step's level is one more than its deepest dependency's;
    steps without dependencies, or whose dependencies retention deleted, are level 0),
    then in the order they were added; each
    with `level` and `after` ((id, step name) of its dependencies)."""
    names = {step["id"]: step["step"] for step in steps}
    levels: dict[int, int] = {}
    for step in steps:  # in id order: a step's dependencies were added before it
        depends = step["depends_on"] or ()
        levels[step["id"]] = 1 + max((levels.get(d, -1) for d in depends), default=-1)
    ordered = [
        {
            **step,
            "level": levels[step["id"]],
            "after": [(d, names.get(d, f"job {d}")) for d in step["depends_on"] or ()],
        }
        for step in steps
    ]
    return sorted(ordered, key=lambda step: (step["level"], step["id"]))


def cancel(dashboard: Dashboard, request: Request, form: FormData, who: str) -> Response:
    workflow_id = parse_id(request.path_params["workflow_id"], "workflow")
    try:
        cancelled = admin.cancel_workflow(dashboard.app, workflow_id)
    except JobNotFoundError:
        raise BadRequest(f"no workflow with id {workflow_id}", 404) from None
    logged("cancel workflow", who, workflow_id=workflow_id, cancelled=len(cancelled))
    if cancelled:
        steps = "1 step" if len(cancelled) == 1 else f"{len(cancelled):,} steps"
        notice = f"workflow {workflow_id}: {steps} cancelled"
    else:
        notice = f"workflow {workflow_id} had no unfinished step"
    return redirect(request, "workflow", notice, workflow_id=workflow_id)
