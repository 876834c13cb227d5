"""What a data operation asks of a connection, one step at a time.

An operation is a plan: a generator that yields steps (a statement, a COPY, a group of
steps to run atomically) and is sent each step's result. A plan decides everything
once; the two drivers in `connector.py`, one synchronous and one for asyncio, only run
its steps on a connection. So the enqueue's logic (unique keys, queue limits, COPY) is
written once for both kinds of caller.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import sql

T = TypeVar("T")
# What a statement takes: named parameters, or positional ones (ENQUEUE_ONE's).
Params = Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement; its result is `Rows`.

    `reuse_cursor`: a small result, so the connection's kept cursor may run it
    (data/reused_cursor.py). `binary`: rows in PostgreSQL's binary format (the claim's,
    cheaper to parse). `named`: the rows' column names are wanted (`Rows.dicts`).
    """

    query: sql.SQL
    params: Params | None = None
    reuse_cursor: bool = False
    binary: bool = False
    named: bool = False


@dataclass(frozen=True, slots=True)
class CopyIn:
    """`COPY ... FROM STDIN` of `rows`, each a tuple of the columns' values; binary
    when `types` names the columns' types. Its result is None."""

    query: sql.SQL
    rows: Iterable[Sequence[Any]]
    types: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class Atomic:
    """Steps that succeed or fail together: a savepoint inside the caller's transaction,
    or a transaction of their own on an autocommit connection. Its result is the inner
    plan's."""

    plan: Plan[Any]


Step = Statement | CopyIn | Atomic
Plan = Generator[Step, Any, T]


class Rows(list[tuple[Any, ...]]):
    """A statement's rows, always tuples, whatever row factory the caller's connection
    has; with the count of rows it changed and, when asked for, its column names."""

    def __init__(
        self, rows: Iterable[tuple[Any, ...]], rowcount: int, columns: Sequence[str] = ()
    ) -> None:
        super().__init__(rows)
        self.rowcount = rowcount
        self.columns = tuple(columns)

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as {column: value} (the statement must have been `named`)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self]


def single(statement: Statement) -> Plan[Rows]:
    """A plan of one statement."""
    rows: Rows = yield statement
    return rows
