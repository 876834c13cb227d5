"""The overview: jobs by state; finished and failed per minute (last hour) and per quarter
hour (last day) as charts; how long each queue's oldest due job has waited; run times
by task.

A busy day is hundreds of thousands of finished jobs, too many to read at every refresh.
A bin of a chart that closed a while ago no longer changes, so each dashboard keeps the
bins it counted (`Throughput`) and reads only the bins it has not counted yet, newest
first, a bounded number of rows per page view (more only when a single bin holds more:
a bin is counted whole or not at all): the open bins at every refresh, the whole window
once. When the first view of a busy day cannot count it all, the bins not yet
counted are left empty and the caption says so; the next refreshes fill them in. A job
is counted in the bin it finished in, as it was then: a bin once settled is not read
again, so a retry or a prune later does not rewrite the history of what was done.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs.data.dashboard import CHART_SCAN, DashboardStatements, QueueLatency, StateCount
from pgjobs.web.dashboard import Dashboard, page
from pgjobs.web.format import Count

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# A bin is settled (kept, never read again) once it closed this long ago: an outcome's
# transaction commits a moment after its `finished_at`.
SETTLE = timedelta(minutes=2)


@dataclass(frozen=True)
class Window:
    """One chart: its title, how far back it looks, the width of a bar."""

    title: str
    span: timedelta
    width: timedelta


WINDOWS = (
    Window("last hour, per minute", timedelta(hours=1), timedelta(minutes=1)),
    Window("last day, per 15 minutes", timedelta(days=1), timedelta(minutes=15)),
)


def routes(dashboard: Dashboard) -> list[Route]:
    throughput = Throughput()

    def handler(dashboard: Dashboard, request: Request) -> Response:
        return show(dashboard, request, throughput)

    return [Route("/", page(dashboard, handler), name="overview")]


def show(dashboard: Dashboard, request: Request, throughput: Throughput) -> Response:
    statements = DashboardStatements(dashboard.app.data.sql)
    with dashboard.reading() as conn:
        now = statements.now(conn)
        counts = statements.state_counts(conn)
        charts = throughput.charts(statements, conn, now)
        latency, latency_partial = statements.queue_latency(conn)
        run_times, run_times_capped = statements.run_times(conn, since=now - timedelta(hours=1))
    return dashboard.render(
        request,
        "overview.html",
        {
            "counts": [(c.state, shown_count(c)) for c in counts],
            "charts": charts,
            "latency": latency,
            "latency_partial": latency_partial,
            "latency_longest": _longest(latency),
            "run_times": run_times,
            "run_times_capped": run_times_capped,
            "run_times_longest": max((t.p95 for t in run_times), default=0.0),
        },
    )


def _longest(latency: list[QueueLatency]) -> float:
    return max((q.waited.total_seconds() for q in latency if q.waited is not None), default=0.0)


def shown_count(count: StateCount) -> Count | None:
    """Exact below the cap; beyond it the planner's estimate, else "10,000+"; a state a
    big table does not count is its estimate (None: no estimate yet)."""
    if count.counted is None:
        return None if count.estimated is None else Count(count.estimated, estimated=True)
    if not count.capped:
        return Count(count.counted)
    if count.estimated is not None and count.estimated > count.counted:
        return Count(count.estimated, estimated=True)
    return Count(count.counted - 1, capped=True)


class Throughput:
    """The bins of both charts this dashboard has counted and that no longer change."""

    def __init__(self) -> None:
        self._settled: dict[timedelta, dict[datetime, tuple[int, int]]] = {}
        self._lock = threading.Lock()  # one page view fills the bins at a time

    def charts(
        self, statements: DashboardStatements, conn: Any, now: datetime
    ) -> list[dict[str, Any]]:
        """Both charts' data, reading at most `CHART_SCAN` rows per chart: the bins not
        counted yet, newest first (the open ones, then any gap the first views left)."""
        with self._lock:
            return [self._chart(statements, conn, now, window) for window in WINDOWS]

    def _chart(
        self, statements: DashboardStatements, conn: Any, now: datetime, window: Window
    ) -> dict[str, Any]:
        width = window.width
        last = EPOCH + (now - EPOCH) // width * width  # the open bin
        starts = [last - width * n for n in range(int(window.span / width) - 1, -1, -1)]
        settled = self._settled.setdefault(width, {})
        for old in [at for at in settled if at < starts[0]]:
            del settled[old]
        counted: dict[datetime, tuple[int, int]] = dict(settled)
        budget = CHART_SCAN
        for run in reversed(_runs([at for at in starts if at not in settled], width)):
            if budget <= 0:
                break
            found = statements.finished_bins(
                conn, since=run[0], until=run[-1] + width, width=width, origin=EPOCH, cap=budget
            )
            if found.counted_from > run[-1]:  # one bin holds more: it is counted whole
                found = statements.finished_bins(
                    conn, since=run[-1], until=run[-1] + width, width=width, origin=EPOCH, cap=None
                )
            budget -= found.read
            fresh = {b.at: (b.completed, b.failed) for b in found.bins}
            for at in run:
                if at >= found.counted_from:
                    counted[at] = fresh.get(at, (0, 0))
                    if at + width <= now - SETTLE:
                        settled[at] = counted[at]
        values = [counted.get(at) for at in starts]
        return {
            "title": window.title,
            "total_completed": sum(v[0] for v in values if v is not None),
            "total_failed": sum(v[1] for v in values if v is not None),
            "uncounted": sum(1 for v in values if v is None),
            "data": json.dumps(
                [
                    [int(at.timestamp()) for at in starts],
                    [None if v is None else v[0] for v in values],
                    [None if v is None else v[1] for v in values],
                ]
            ),
            "scan": CHART_SCAN,
        }


def _runs(starts: list[datetime], width: timedelta) -> list[list[datetime]]:
    """Consecutive bins grouped: each run is read with one statement."""
    runs: list[list[datetime]] = []
    for at in starts:
        if runs and runs[-1][-1] + width == at:
            runs[-1].append(at)
        else:
            runs.append([at])
    return runs
