"""Health: a few cheap checks of the queue, each ok / warn / fail with a one-line fix.

Each check is a function of the App and a connection (`CHECKS`), reading little through
the partial indexes, so that `pgjobs doctor` can run the same list, or replace it, and
this page show its result. A check that cannot run (a role without the right, say)
shows as a warning that says why; it does not take the page down.
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

from pgjobs.app import App
from pgjobs.data.dashboard import DashboardStatements
from pgjobs.data.dashboard_ops import DashboardOpsStatements
from pgjobs.errors import PgJobsError
from pgjobs.schema_revision import package_revisions
from pgjobs.web.dashboard import Dashboard, page
from pgjobs.web.format import age

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


def schema_check(app: App, conn: Any) -> Check:
    """The schema exists and has every migration this pgjobs ships."""
    migrated, revision = app.data.inspect.schema_revision(conn)
    known = package_revisions()
    name = "schema"
    if not migrated:
        return Check(name, "fail", f"schema {app.schema} has no jobs table", "run: pgjobs migrate")
    if revision is None:
        return Check(
            name,
            "warn",
            "this role may not read the schema's revision (alembic_version)",
            "check with a role that may, or run: pgjobs migrate",
        )
    if revision in known[:-1]:
        return Check(
            name,
            "fail",
            f"schema at migration {revision}; this pgjobs needs {known[-1]}",
            "run: pgjobs migrate",
        )
    if revision not in known:
        return Check(name, "ok", f"schema at {revision}, newer than this pgjobs (a rolling deploy)")
    return Check(name, "ok", f"schema at the current migration ({revision})")


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


def queue_lag_check(app: App, conn: Any) -> Check:
    """No active queue's oldest due job has waited long."""
    latency, _ = DashboardStatements(app.data.sql).queue_latency(conn)
    waiting = [q for q in latency if q.waited is not None and not q.paused]
    if not waiting:
        return Check("queue lag", "ok", "no due job is waiting in an active queue")
    worst = max(waiting, key=lambda q: q.waited or timedelta())
    waited = worst.waited or timedelta()
    summary = f"queue {worst.queue}: the oldest due job has waited {age(waited)}"
    fix = f"add workers or concurrency for {worst.queue}, or check its limits: pgjobs queues"
    if waited >= LAG_FAIL:
        return Check("queue lag", "fail", summary, fix)
    if waited >= LAG_WARN:
        return Check("queue lag", "warn", summary, fix)
    return Check("queue lag", "ok", summary)


def heartbeats_check(app: App, conn: Any) -> Check:
    """Running jobs still beat: a stale one should have been rescued already."""
    stale, partial = DashboardOpsStatements(app.data.sql).stale_running(conn)
    among = " (among the oldest running jobs)" if partial else ""
    if stale:
        return Check(
            "heartbeats",
            "fail",
            f"{stale:,} running job{'s' if stale != 1 else ''} with no heartbeat for twice "
            f"their worker's rescue_after{among}",
            "no leader is rescuing them: start a worker (it rescues them), see pgjobs workers",
        )
    return Check("heartbeats", "ok", f"every running job's heartbeat is fresh{among}")


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


def notifications_check(app: App, conn: Any) -> Check:
    """Workers are woken by the jobs table's trigger through NOTIFY."""
    enabled, usage = DashboardOpsStatements(app.data.sql).notifications(conn)
    if enabled is None:
        return Check(
            "notifications",
            "fail",
            "the trigger that wakes workers (jobs_notify_available) is missing",
            "run: pgjobs migrate",
        )
    if not enabled:
        return Check(
            "notifications",
            "warn",
            "the trigger that wakes workers is disabled: jobs wait for the next poll",
            "ALTER TABLE ... ENABLE TRIGGER jobs_notify_available",
        )
    if usage >= NOTIFY_QUEUE_WARN:
        return Check(
            "notifications",
            "warn",
            f"the server's notification queue is {usage:.0%} full",
            "a session LISTENs without reading: find it in pg_stat_activity and end it",
        )
    return Check("notifications", "ok", "the wake-up trigger is on; notifications flow")


CHECKS: tuple[CheckFunction, ...] = (
    schema_check,
    workers_check,
    queue_lag_check,
    heartbeats_check,
    paused_check,
    notifications_check,
)


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
        checks = run_checks(dashboard.app, conn)
    levels = {check.level for check in checks}
    overall = "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"
    return dashboard.render(request, "health.html", {"checks": checks, "overall": overall})
