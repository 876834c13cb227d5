"""A system's database, and the SQL its script gave to observe, fill and reset its tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from ..drivers.base import System


@dataclass
class Target:
    """A system with its own database in the cluster, and what its script told about it."""

    system: System
    url: str
    admin: psycopg.Connection[Any]
    sql: dict[str, str]
    version: str


def scalar(target: Target, query: str, params: dict[str, Any] | None = None) -> Any:
    row = target.admin.execute(query, params).fetchone()
    return row[0] if row else None


def reset(target: Target) -> None:
    target.admin.execute(target.sql["reset"])


def settle(target: Target) -> None:
    """Fresh statistics and a checkpoint, so a run starts without inherited debt."""
    target.admin.execute("VACUUM ANALYZE")
    target.admin.execute("CHECKPOINT")


def fill_directly(target: Target, waiting: int, finished: int = 0) -> None:
    """Fill the tables in SQL, with triggers off (no NOTIFY storms, no event rows)."""
    with target.admin.transaction():
        target.admin.execute("SET LOCAL session_replication_role = replica")
        if finished:
            target.admin.execute(target.sql["fill_finished"], {"count": finished})
        if waiting:
            target.admin.execute(target.sql["fill_waiting"], {"count": waiting})


def window_bounds(target: Target, expected: int) -> tuple[float, float]:
    """When the first claim and the last recorded outcome were (epoch seconds, the
    server's clock), from the tables."""
    row = target.admin.execute(target.sql["window"]).fetchone()
    if row is None or row[0] is None or row[1] is None:
        raise RuntimeError("no finished job recorded")
    first, last, count = row
    if count != expected:
        raise RuntimeError(f"{count} of {expected} jobs recorded as finished")
    return float(first), float(last)
