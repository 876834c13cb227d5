"""Following the demo's jobs while the worker runs them.

On a terminal a live table of the jobs by state and a progress bar refresh in place;
otherwise (a pipe, a CI log) one plain line a second says the same.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgjobs import admin
from pgjobs.app import App
from pgjobs.demo import DEMO_QUEUE
from pgjobs.types import FINISHED_STATES, Job, JobState

REFRESH = 0.25
PLAIN_REFRESH = 1.0
# Display order: `available` is split into runnable now and waiting for its `run_at`.
ROWS = (
    ("waiting", "available, runnable now"),
    ("scheduled", "available, delayed or backing off before a retry"),
    ("running", "started by one of the worker's threads"),
    ("claimed", "claimed by the worker, waiting for a free thread"),
    ("completed", "done"),
    ("failed", "out of attempts"),
    ("cancelled", "cancelled by someone"),
)
_STYLES = {"running": "yellow", "completed": "green", "failed": "red"}


@dataclass(frozen=True)
class Snapshot:
    """The demo's jobs at one moment, counted by the rows of the display."""

    jobs: list[Job]
    counts: Counter[str]

    @classmethod
    def read(cls, app: App, total: int) -> Snapshot:
        jobs = admin.list_jobs(app, queues=[DEMO_QUEUE], limit=max(total, 1))
        return cls.of(jobs, datetime.now(timezone.utc))

    @classmethod
    def of(cls, jobs: list[Job], now: datetime) -> Snapshot:
        """`jobs` counted by display row at `now`."""
        return cls(jobs, Counter(display_row(job, now) for job in jobs))

    @property
    def finished(self) -> int:
        return sum(self.counts[state.value] for state in FINISHED_STATES)

    @property
    def retries(self) -> int:
        """Attempts started beyond each job's first."""
        return sum(max(job.attempts - 1, 0) for job in self.jobs)

    def line(self, elapsed: float, total: int) -> str:
        """One plain progress line, for output that is not a terminal."""
        counts = "  ".join(f"{name} {self.counts[name]}" for name, _ in ROWS[:6])
        return (
            f"{elapsed:5.1f}s  {counts}  retries {self.retries}  ({self.finished}/{total} finished)"
        )


def display_row(job: Job, now: datetime) -> str:
    """The row of the display that `job` counts in.

    A worker claims ahead of its threads, so a `running` job may still wait in its
    buffer, `began_at` not set until it is readied for a thread: counting those as
    running showed "running 10" for 4 threads.
    """
    if job.state is JobState.AVAILABLE:
        return "scheduled" if job.run_at > now else "waiting"
    if job.state is JobState.RUNNING and job.began_at is None:
        return "claimed"
    return str(job.state)


def watch(console: Console, app: App, total: int, started: float, time_limit: float) -> float:
    """Follow the queue until every job is finished or `time_limit` seconds have passed
    since `started`; returns the seconds that took."""
    if not console.is_terminal:
        return _watch_plain(app, total, started, time_limit)
    progress = Progress(
        TextColumn("finished"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("jobs", total=total)
    snapshot = Snapshot.read(app, total)
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            progress.update(bar, completed=snapshot.finished)
            live.update(Group(_state_table(snapshot), progress))
            elapsed = time.monotonic() - started
            if snapshot.finished >= total or elapsed > time_limit:
                return elapsed
            time.sleep(REFRESH)
            snapshot = Snapshot.read(app, total)


def _watch_plain(app: App, total: int, started: float, time_limit: float) -> float:
    """The same as `watch`, as one printed line a second."""
    next_line = started
    while True:
        snapshot = Snapshot.read(app, total)
        elapsed = time.monotonic() - started
        done = snapshot.finished >= total or elapsed > time_limit
        if done or time.monotonic() >= next_line:
            print(snapshot.line(elapsed, total), flush=True)
            next_line += PLAIN_REFRESH
        if done:
            return elapsed
        time.sleep(REFRESH)


def _state_table(snapshot: Snapshot) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("state")
    table.add_column("jobs", justify="right")
    table.add_column("")
    for name, meaning in ROWS:
        if name == "cancelled" and not snapshot.counts[name]:
            continue
        table.add_row(name, str(snapshot.counts[name]), meaning, style=_STYLES.get(name))
    table.add_row("retries", str(snapshot.retries), "attempts after a failure", style="dim")
    return table
