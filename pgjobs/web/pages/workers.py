"""Workers: the live ones and those lost in the last hour, as `<schema>.workers` records
them (`pgjobs workers` shows the same), with what each leads and the jobs it holds.

A worker is lost when it has sent no heartbeat for its own `rescue_after`: its jobs are
being given back to the queue. Its row stays an hour (`pgjobs.fleet`), then goes. Who
leads is worked out as the workers elect it: the longest-running live worker does the
fleet's upkeep, and each duty (periodic enqueue, retention) goes to the longest-running
live worker that has it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs.data.dashboard_ops import RUNNING_SCAN, WORKERS_LIMIT, DashboardOpsStatements
from pgjobs.fleet import LOST_WORKER_RETENTION
from pgjobs.web.dashboard import Dashboard, page


def routes(dashboard: Dashboard) -> list[Route]:
    return [Route("/workers", page(dashboard, show), name="workers")]


def show(dashboard: Dashboard, request: Request) -> Response:
    with dashboard.reading() as conn:
        fleet = DashboardOpsStatements(dashboard.app.data.sql).fleet(conn)
    return dashboard.render(
        request,
        "workers.html",
        {
            "live": [w for w in fleet.workers if not w.lost],
            "lost": [w for w in fleet.workers if w.lost],
            "fleet": fleet,
            "limit": WORKERS_LIMIT,
            "running_scan": RUNNING_SCAN,
            "retention_text": f"{LOST_WORKER_RETENTION.total_seconds() / 60:.0f} minutes",
        },
    )
