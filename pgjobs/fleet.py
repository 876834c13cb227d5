"""The worker fleet as `<schema>.workers` records it: what `pgjobs workers` shows.

Each worker keeps one row up to date (`pgjobs.worker.registry`). A worker that stops
heart-beating for its own `rescue_after` is *lost*, exactly when its jobs become
rescuable; its row stays for `LOST_WORKER_RETENTION` so that people can see what was
lost and when, then the maintenance leader deletes it. A clean exit deletes the row at
once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pgjobs.app import App

# How long `pgjobs workers` keeps listing a lost worker.
LOST_WORKER_RETENTION = timedelta(hours=1)


@dataclass(frozen=True)
class WorkerRegistration:
    """What a worker says about itself in its row; `queues` None means every queue."""

    id: str
    host: str
    pid: int
    queues: list[str] | None
    concurrency: int
    version: str
    rescue_after: float

    def as_params(self) -> dict[str, Any]:
        """The row's values as statement parameters, one per field."""
        return asdict(self)


@dataclass(frozen=True)
class RegisteredWorker:
    """A row of `<schema>.workers` with the jobs its worker holds now.

    `jobs` are the ids of the jobs `running` under this worker's id (running, or claimed
    and waiting for a thread); `tasks` counts them by task. For a lost worker they are
    the jobs waiting to be rescued.
    """

    id: str
    host: str
    pid: int
    queues: list[str] | None
    concurrency: int
    version: str
    rescue_after: float
    started_at: datetime
    last_heartbeat_at: datetime
    lost: bool
    tasks: dict[str, int]
    jobs: list[int]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RegisteredWorker:
        """Build from a row of the LIST_WORKERS statement."""
        fields = {name: row[name] for name in cls.__dataclass_fields__ if name != "jobs"}
        return cls(**fields, jobs=list(row["job_ids"]))

    def silent_for(self, now: datetime | None = None) -> timedelta:
        """How long since the last heartbeat."""
        return (now or datetime.now(timezone.utc)) - self.last_heartbeat_at

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The JSON shape of `pgjobs workers --json`."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "version": self.version,
            "rescue_after": self.rescue_after,
            "started_at": self.started_at,
            "last_heartbeat_at": self.last_heartbeat_at,
            "silent_seconds": round(self.silent_for(now).total_seconds(), 3),
            "holding": len(self.jobs),
            "tasks": self.tasks,
            "jobs": self.jobs,
        }


def list_workers(app: App) -> list[RegisteredWorker]:
    """Every registered worker, live ones first (oldest first), then the lost ones."""
    with app.database.transaction() as conn:
        return app.store.list_workers(conn)
