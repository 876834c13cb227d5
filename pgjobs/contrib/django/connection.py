"""Django's database connections as the connection of an enqueue.

`task.enqueue(django.db.connection, ...)` (or `connections[alias]`) runs pgjobs' insert
on the psycopg connection that Django's PostgreSQL backend wraps: inside
`transaction.atomic()` that connection holds the block's transaction (and its savepoints),
so the job commits or rolls back with it; outside one, Django's autocommit commits it at
once. pgjobs' statements are psycopg 3's, so a Django that runs on psycopg2 is refused.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.connection import ConnectionProxy


def unwrap(conn: Any) -> psycopg.Connection[Any] | None:
    """The psycopg connection under a Django connection (connected if need be), or None
    for anything else; TypeError for a Django connection pgjobs cannot use."""
    if not isinstance(conn, (BaseDatabaseWrapper, ConnectionProxy)):
        return None
    if conn.vendor != "postgresql":
        raise TypeError(
            f"pgjobs enqueues on PostgreSQL, and the Django connection {conn.alias!r} "
            f"is {conn.vendor}"
        )
    conn.ensure_connection()
    raw = conn.connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(
            f"pgjobs needs psycopg 3, and the Django connection {conn.alias!r} uses "
            f"{type(raw).__module__.partition('.')[0]}: pip install 'psycopg[binary]' "
            "(Django prefers psycopg 3 when both are installed)"
        )
    return raw


def django_connection(alias: str | None) -> Any:
    """The current thread's Django connection of `alias` (None: pgjobs' own pool)."""
    return None if alias is None else connections[alias]
