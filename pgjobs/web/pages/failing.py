"""Failing tasks: failed attempts grouped by task and error class, over the last hour, day
and week, with the last one's message and a link to the task's failed jobs.

A failed attempt is an entry of a job's `errors`: the attempt that failed its job for
good (the last entry of a `failed` job) and every attempt that was retried, whatever
became of the job since (waiting for its retry, completed at a later attempt, cancelled).
The error class is the message's first line up to its first colon: `ValueError`,
`TimeoutError`, `worker lost`. A week of failures can be many rows: the page reads the
newest jobs with errors up to a cap (`pgjobs.data.dashboard_ops`), and a window the read
did not reach back to shows its counts as lower bounds ("120+").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs.data.dashboard_ops import FAILING_SCAN, DashboardOpsStatements, FailureGroup, Failures
from pgjobs.web.dashboard import Dashboard, page
from pgjobs.web.format import Count


@dataclass(frozen=True)
class FailingRow:
    """A group as the page shows it: each window's counts, exact or lower bounds."""

    group: FailureGroup
    last_hour: Count
    last_day: Count
    last_week: Count
    final_last_hour: Count
    final_last_day: Count
    final_last_week: Count


def routes(dashboard: Dashboard) -> list[Route]:
    return [Route("/failing", page(dashboard, show), name="failing")]


def show(dashboard: Dashboard, request: Request) -> Response:
    with dashboard.reading() as conn:
        failures = DashboardOpsStatements(dashboard.app.data.sql).failures(conn)
    return dashboard.render(
        request,
        "failing.html",
        {
            "rows": [shown(group, failures) for group in failures.groups],
            "failures": failures,
            "scan": FAILING_SCAN,
        },
    )


def shown(group: FailureGroup, failures: Failures) -> FailingRow:
    """The group's counts, each marked as a lower bound when its window starts before
    the moment from which every failed attempt was read."""

    def count(value: int, span: timedelta) -> Count:
        since = failures.complete_since
        return Count(value, capped=since is not None and failures.read_at - span < since)

    hour, day, week = timedelta(hours=1), timedelta(days=1), timedelta(days=7)
    return FailingRow(
        group=group,
        last_hour=count(group.last_hour, hour),
        last_day=count(group.last_day, day),
        last_week=count(group.last_week, week),
        final_last_hour=count(group.final_last_hour, hour),
        final_last_day=count(group.final_last_day, day),
        final_last_week=count(group.final_last_week, week),
    )
