"""Health: `pgjobs doctor`'s checks (pgjobs.doctor), then two of the dashboard's own
(workers live and lost, paused queues), each ok / warn / fail with a one-line fix.

The dashboard's two are doctor checks like the others, run by the same `run_checks`:
each in a savepoint, and one that cannot run (a role without the right, say) shows as a
warning that says why; it does not take the page down.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs import doctor
from pgjobs.data.dashboard_ops import DashboardOpsStatements
from pgjobs.doctor.findings import Context, Finding
from pgjobs.web.dashboard import Dashboard, page


def workers(ctx: Context) -> Finding:
    """Some worker is running, and none was lost lately."""
    live, lost = DashboardOpsStatements(ctx.statements.sql).fleet_counts(ctx.conn)
    if live == 0:
        return Finding(
            "workers", "fail", "no worker is running: jobs wait", "start one: pgjobs work --app ..."
        )
    if lost:
        return Finding(
            "workers",
            "warn",
            f"{live} live, {lost} lost in the last hour (stopped without a clean exit)",
            "see the workers page, and the lost hosts' logs (out of memory, kill -9)",
        )
    return Finding("workers", "ok", f"{live} live worker{'s' if live != 1 else ''}")


def paused_queues(ctx: Context) -> Finding:
    """Paused queues, which workers do not serve (on purpose, usually)."""
    paused = DashboardOpsStatements(ctx.statements.sql).paused_queues(ctx.conn)
    if paused:
        return Finding(
            "paused queues",
            "warn",
            f"paused: {', '.join(paused)}",
            "resume on the queues page, or: pgjobs queue resume NAME",
        )
    return Finding("paused queues", "ok", "no queue is paused")


# `pgjobs doctor`'s checks, then the dashboard's own.
CHECKS = (*doctor.CHECKS, ("workers", workers), ("paused queues", paused_queues))


def routes(dashboard: Dashboard) -> list[Route]:
    return [Route("/health", page(dashboard, show), name="health")]


def show(dashboard: Dashboard, request: Request) -> Response:
    with dashboard.reading() as conn:
        # measure=False: the bloat check estimates from statistics, reading no table.
        checks = doctor.run_checks(dashboard.app, conn, checks=CHECKS, measure=False)
    statuses = {check.status for check in checks}
    overall = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"
    return dashboard.render(request, "health.html", {"checks": checks, "overall": overall})
