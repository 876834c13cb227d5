"""The dashboard as an ASGI application: its routes (one module of `pages/` each), its
static files, its error pages, and the closing of its pool with the server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from pgjobs.web.dashboard import HERE, Dashboard
from pgjobs.web.pages import (
    failing,
    health,
    job,
    jobs,
    overview,
    queues,
    schedules,
    workers,
    workflows,
)

log = logging.getLogger("pgjobs.web")

# Each page module gives its routes for a dashboard: `routes(dashboard) -> list[Route]`.
PAGES = (overview, queues, jobs, job, failing, workflows, workers, schedules, health)


def build(dashboard: Dashboard) -> Starlette:
    """The Starlette application of `dashboard`."""
    routes: list[BaseRoute] = [
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static")
    ]
    for module in PAGES:
        routes.extend(module.routes(dashboard))

    async def not_found(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 404
        detail = error.detail if isinstance(error, HTTPException) else "not found"
        message = "no such page" if status == 404 else str(detail)
        return dashboard.error(request, status, message)

    async def failed(request: Request, error: Exception) -> Response:
        log.exception("dashboard: unexpected error", extra={"path": request.url.path})
        return dashboard.error(request, 500, "something went wrong on the server; see its log")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        dashboard.app.close()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, 404: not_found, Exception: failed},
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    return app


def describe_routes(app: Any) -> list[str]:
    """`METHOD path` of every route, for tests and the docs."""
    found = []
    for route in app.routes:
        methods = sorted(getattr(route, "methods", None) or ["*"])
        found.append(f"{'/'.join(methods)} {route.path}")
    return found
