"""Health: `pgjobs doctor`'s checks (pgjobs.doctor), then two of the dashboard's own
(workers live and lost, paused queues), each ok / warn / fail with a one-line fix.

A check that cannot run (a role without the right, say) shows as a warning that says
why; it does not take the page down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs import doctor
from pgjobs.app import App
from pgjobs.data.dashboard_ops import DashboardOpsStatements
from pgjobs.errors import PgJobsError
from pgjobs.web.dashboard import Dashboard, page

log = logging.getLogger("pgjobs.web")

Level = Literal["ok", "warn", "fail"]
# How long the oldest due job of an active queue may wait before it is a warning, and
# before it is a failure.
LAG_WARN = timedelta(minutes=1)
LAG_FAIL = timedelta(minutes=10)
# A notification queue this full means a session LISTENs and does not read.
NOTIFY_QUEUE_WARN = 0.5


@dataclass(frozen=True)
class Check:
    """One check's verdict: a one-line summary, and the fix when it is not ok."""

    name: str
    level: Level
    summary: str
    fix: str = ""


CheckFunction = Callable[[App, Any], Check]


def workers_check(app: App, conn: Any) -> Check:
    """Some worker is running, and none was lost lately."""
    live, lost = DashboardOpsStatements(app.data.sql).fleet_counts(conn)
    if live == 0:
        return Check(
            "workers", "fail", "no worker is running: jobs wait", "start one: pgjobs work --app ..."
        )
    if lost:
        return Check(
            "workers",
            "warn",
            f"{live} live, {lost} lost in the last hour (stopped without a clean exit)",
            "see the workers page, and the lost hosts' logs (out of memory, kill -9)",
        )
    return Check("workers", "ok", f"{live} live worker{'s' if live != 1 else ''}")


def paused_check(app: App, conn: Any) -> Check:
    """Paused queues, which workers do not serve (on purpose, usually)."""
    paused = DashboardOpsStatements(app.data.sql).paused_queues(conn)
    if paused:
        return Check(
            "paused queues",
            "warn",
            f"paused: {', '.join(paused)}",
            "resume on the queues page, or: pgjobs queue resume NAME",
        )
    return Check("paused queues", "ok", "no queue is paused")


# The dashboard's own, beside `pgjobs doctor`'s checks (which it shows first).
CHECKS: tuple[CheckFunction, ...] = (workers_check, paused_check)


def run_checks(app: App, conn: Any, checks: tuple[CheckFunction, ...] = CHECKS) -> list[Check]:
    """Every check's verdict; each runs in a savepoint, so one that fails leaves the
    others their transaction."""
    found = []
    for check in checks:
        try:
            with conn.transaction():
                found.append(check(app, conn))
        except psycopg.OperationalError:
            raise  # the database itself: the page says so
        except (psycopg.Error, PgJobsError) as error:
            name = check.__name__.removesuffix("_check").replace("_", " ")
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("health check failed", extra={"check": name, "error": reason})
            found.append(Check(name, "warn", f"could not check: {reason}"))
    return found


def routes(dashboard: Dashboard) -> list[Route]:
    return [Route("/health", page(dashboard, show), name="health")]


def show(dashboard: Dashboard, request: Request) -> Response:
    with dashboard.reading() as conn:
        # measure=False: the bloat check estimates from statistics, reading no table.
        found = doctor.run_checks(dashboard.app, conn, measure=False)
        checks = [Check(f.name, f.status, f.message, f.fix or "") for f in found]
        checks += run_checks(dashboard.app, conn)
    levels = {check.level for check in checks}
    overall = "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"
    return dashboard.render(request, "health.html", {"checks": checks, "overall": overall})
