"""What every check shares: its verdict (`Finding`), the safe fix it may offer (`Repair`),
the thresholds it judges by, and the context it runs in."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

import psycopg

from pgjobs.data.doctor import DoctorStatements, FleetUse, ServerFacts
from pgjobs.data.doctor_tables import TableStatements
from pgjobs.db import first_line
from pgjobs.errors import PgJobsError
from pgjobs.worker.connection import APPLICATION_NAME_PREFIX

Status = Literal["ok", "warn", "fail"]
T = TypeVar("T")
# Worse verdicts sort higher.
SEVERITY: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}
# Sessions, jobs or relations a message names at most; the count says how many more.
NAMED = 3
# pg_stat_activity hides other roles' state, start and query from a role without it.
READ_ALL_STATS = "pg_read_all_stats"
# A name that needs no double quotes in SQL (keywords aside).
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")


# How long a fix may wait for a lock (or for an older transaction to end) before it
# gives up, instead of queueing behind a long transaction and blocking others behind it.
LOCK_TIMEOUT = timedelta(seconds=10)


class RepairFailed(Exception):
    """A repair that did not happen: refused before it started (it could not finish
    safely now), or failed and tidied up after; the message says which and why."""


@dataclass(frozen=True)
class Repair:
    """A safe fix that `pgjobs doctor --fix` may apply: `what` is the statement a DBA
    would recognise; `apply` runs it on an autocommit connection and says what it did."""

    what: str
    apply: Callable[[psycopg.Connection[Any]], str]


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ok, warn or fail, in one line, and the fix in one line."""

    name: str
    status: Status
    message: str
    fix: str = ""
    repairs: tuple[Repair, ...] = field(default=(), compare=False, repr=False)

    def as_dict(self) -> dict[str, str]:
        """The JSON form: `{name, status, message, fix}`."""
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Thresholds:
    """Where each check turns from ok to warn, and from warn to fail (docs/operations.md
    lists them). Tests pass their own so as to provoke a finding without waiting."""

    # A session idle in a transaction this long is a warning (SPEC: 10 s).
    idle_in_transaction: timedelta = timedelta(seconds=10)
    # What holds the xmin horizon back: a transaction open this long, or this many
    # transactions behind (all a slot shows, or another role's session to a role
    # without pg_read_all_stats). 50 M is a quarter of autovacuum_freeze_max_age.
    horizon_warn: timedelta = timedelta(minutes=5)
    horizon_fail: timedelta = timedelta(hours=1)
    horizon_warn_xids: int = 1_000_000
    horizon_fail_xids: int = 50_000_000
    # Dead rows of a table: this many, and this share of its rows.
    dead_rows_warn: int = 10_000
    dead_share_warn: float = 0.2
    dead_rows_fail: int = 1_000_000
    dead_share_fail: float = 0.5
    # Bytes a table or index wastes: this many, and this share of its size.
    bloat_bytes_warn: int = 64 * 2**20
    bloat_share_warn: float = 0.5
    bloat_bytes_fail: int = 2**30
    bloat_share_fail: float = 0.8
    # Client connections in use, as a share of max_connections less the reserved ones.
    connections_warn: float = 0.8
    connections_fail: float = 0.95
    # How long the oldest due job of an active queue has waited.
    lag_warn: timedelta = timedelta(minutes=1)
    lag_fail: timedelta = timedelta(minutes=10)
    # How full the server's notification queue is.
    notify_queue_warn: float = 0.5
    notify_queue_fail: float = 0.9


class Context:
    """What a check reads from: the App's schema, a connection, the thresholds and the
    server's facts; the fleet's figures are read once and shared by the checks."""

    def __init__(
        self,
        schema: str,
        conn: psycopg.Connection[Any],
        statements: DoctorStatements,
        tables: TableStatements,
        thresholds: Thresholds,
        facts: ServerFacts,
        schema_state: tuple[bool, str | None],
        *,
        measure: bool = True,
    ) -> None:
        self.schema = schema
        self.conn = conn
        self.statements = statements
        self.tables = tables
        self.thresholds = thresholds
        self.facts = facts
        self.migrated, self.revision = schema_state
        self.measure = measure  # bloat may read tables with pgstattuple_approx
        self._fleet: tuple[FleetUse | None, str | None] | None = None

    def attempt(self, read: Callable[[], T]) -> tuple[T | None, str | None]:
        """(what `read` returns, None) or (None, why it failed), in a savepoint of its own
        so that a failed read leaves the check its transaction."""
        try:
            with self.conn.transaction():
                return read(), None
        except (psycopg.Error, PgJobsError) as error:
            if self.conn.broken:
                raise
            return None, first_line(error)

    def fleet(self) -> tuple[FleetUse | None, str | None]:
        """The live workers' figures, or why they could not be read."""
        if self._fleet is None:
            self._fleet = self.attempt(
                lambda: self.statements.fleet(self.conn, APPLICATION_NAME_PREFIX)
            )
        return self._fleet

    def may_read_all_stats(self) -> bool:
        return self.facts.read_all_stats

    def grant_read_all_stats(self) -> str:
        """The fix that lets this role see other roles' sessions."""
        role = ident(self.facts.role)
        return f"GRANT {READ_ALL_STATS} TO {role} (or run doctor as a role that has it)"


def reason(error: psycopg.Error) -> str:
    """What went wrong, in a line: the server's message and its detail (the duplicated
    key of a unique index, say)."""
    detail = (error.diag.message_detail or "").strip().rstrip(".")
    return first_line(error) + (f": {detail}" if detail and "\n" not in detail else "")


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=SEVERITY.__getitem__, default="ok")


def judge(value: float, warn: float, fail: float) -> Status:
    """fail at `fail` or more, warn at `warn` or more, else ok."""
    return "fail" if value >= fail else "warn" if value >= warn else "ok"


def age(value: timedelta | None) -> str:
    """A duration in its two largest units ("3d 4h", "12m 5s", "8s"; "0.4s" below 10 s)."""
    if value is None:
        return "?"
    seconds = max(0.0, value.total_seconds())
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if parts or whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return " ".join(parts[:2])


def size(value: int) -> str:
    """Bytes in kB, MB or GB, as pg_size_pretty writes them."""
    amount = float(value)
    for unit in ("bytes", "kB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TB"  # pragma: no cover - the loop returns


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def listed(items: list[str], total: int) -> str:
    """The first NAMED items, and how many more of `total` there are."""
    shown = "; ".join(items[:NAMED])
    more = total - min(len(items), NAMED)
    return f"{shown}; and {more:,} more" if more > 0 else shown


def ident(*parts: str) -> str:
    """A (qualified) SQL name as a user would type it: quoted only where it must be, so
    that a fix with an unusual schema or role name still pastes."""
    return ".".join(
        part if _PLAIN_NAME.fullmatch(part) else '"' + part.replace('"', '""') + '"'
        for part in parts
    )


def quoted(text: str) -> str:
    """`text` as an SQL string literal, for a fix the user pastes."""
    return "'" + text.replace("'", "''") + "'"
