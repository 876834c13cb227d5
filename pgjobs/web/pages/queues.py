"""The queues: waiting, oldest waiting, running, finished in the last hour, paused,
limits; pause and resume."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs.data.dashboard import DashboardStatements
from pgjobs.queue_control import pause_queue, resume_queue
from pgjobs.web.dashboard import Dashboard, action, logged, page, redirect


def routes(dashboard: Dashboard) -> list[Route]:
    return [
        Route("/queues", page(dashboard, show), name="queues"),
        Route("/queues/{name}/pause", action(dashboard, pause), methods=["POST"], name="pause"),
        Route("/queues/{name}/resume", action(dashboard, resume), methods=["POST"], name="resume"),
    ]


def show(dashboard: Dashboard, request: Request) -> Response:
    with dashboard.reading() as conn:
        queues = DashboardStatements(dashboard.app.data.sql).queues(conn)
    return dashboard.render(request, "queues.html", {"queues": queues})


def pause(dashboard: Dashboard, request: Request, form: FormData, who: str) -> Response:
    name = request.path_params["name"]
    pause_queue(dashboard.app, name)
    logged("pause queue", who, queue=name)
    return redirect(request, "queues", f"queue {name} paused: workers claim none of its jobs")


def resume(dashboard: Dashboard, request: Request, form: FormData, who: str) -> Response:
    name = request.path_params["name"]
    changed = resume_queue(dashboard.app, name)
    logged("resume queue", who, queue=name, changed=changed)
    notice = f"queue {name} resumed" if changed else f"queue {name} was not paused"
    return redirect(request, "queues", notice)
