"""The worker fleet as `<schema>.workers` records it: what `pgjobs workers` shows.

Each worker keeps one row up to date (`pgjobs.worker.registry`). A worker that stops
heart-beating for its own `rescue_after` is *lost*, exactly when its jobs become
rescuable; its row stays for `LOST_WORKER_RETENTION` so that people can see what was
lost and when, then the maintenance leader deletes it. A clean exit deletes the row at
once.
"""

from __future__ import annotations

from datetime import timedelta

from pgjobs.app import App
from pgjobs.types import RegisteredWorker

# How long `pgjobs workers` keeps listing a lost worker.
LOST_WORKER_RETENTION = timedelta(hours=1)


def list_workers(app: App) -> list[RegisteredWorker]:
    """Every registered worker, live ones first (oldest first), then the lost ones."""
    with app.database.transaction() as conn:
        return app.data.inspect.list_workers(conn)
