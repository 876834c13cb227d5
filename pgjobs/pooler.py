"""Server-side prepared statements on pgjobs' own connections, only where no pooler sits.

psycopg prepares a statement on the server once it has run `prepare_threshold` times on
one connection, under a name (`_pg3_0`, ...) it then reuses. Behind a transaction-mode
pooler (PgBouncer's `pool_mode = transaction`) each transaction may run on another server
connection, where that name is unknown or already taken (`DuplicatePreparedStatement`).
On a direct connection preparing is measurably faster (docs/pgbouncer.md; `bench/pooler.py
prepared`), so a new connection of pgjobs' pool or CLI prepares only once it is proven
direct:

- over TCP, the server sees the very address and port this client's socket has; a pooler
  or proxy connects to the server from a socket of its own;
- over a Unix socket, the peer process that accepted us (`SO_PEERCRED`) is the parent of
  the session's backend, i.e. the postmaster; a pooler is a process of its own.

Anything else (NAT, another host's socket, an error while checking) counts as pooled.
The worker's connections never prepare (`worker/connection.py` says why). Connections a
caller passes to `enqueue` keep the caller's own settings.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from pathlib import Path
from typing import Any

import psycopg

from pgjobs.data.maintenance import client_endpoint

# psycopg's own default, kept on connections proven direct.
PREPARE_THRESHOLD = 5


def prepare_if_direct(conn: psycopg.Connection[Any]) -> None:
    """Let psycopg prepare statements on a new `conn` only when it is proven direct.

    Runs one query; a connection not in autocommit is rolled back after it, so call this
    before using the connection. Connect with `prepare_threshold=None` so that nothing is
    prepared before the verdict.
    """
    try:
        direct = is_direct(conn)
    except psycopg.OperationalError:
        raise  # the connection is unusable: let the caller (or the pool) open another
    except (psycopg.DatabaseError, OSError):
        direct = False  # a proxy that refuses the check is not a direct connection
    finally:
        if not conn.autocommit:
            conn.rollback()
    conn.prepare_threshold = PREPARE_THRESHOLD if direct else None


def is_direct(conn: psycopg.Connection[Any]) -> bool:
    """Whether `conn` reaches the PostgreSQL server itself, with nothing in between."""
    address, port, backend_pid = client_endpoint(conn)
    # A duplicate of the connection's descriptor, so that closing it leaves psycopg's alone.
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as probe:
        if probe.family == socket.AF_UNIX:
            return address is None and _accepted_by_parent_of(probe, backend_pid)
        local_address, local_port = probe.getsockname()[:2]
    if address is None or port != local_port:
        return False
    return _same_address(address, local_address)


def _same_address(server_seen: str, local: str) -> bool:
    seen, mine = ipaddress.ip_address(server_seen), ipaddress.ip_address(local)
    if isinstance(mine, ipaddress.IPv6Address) and mine.ipv4_mapped is not None:
        mine = mine.ipv4_mapped
    if isinstance(seen, ipaddress.IPv6Address) and seen.ipv4_mapped is not None:
        seen = seen.ipv4_mapped
    return seen == mine


def _accepted_by_parent_of(probe: socket.socket, backend_pid: int) -> bool:
    """Whether the Unix-socket peer is the parent process of the server's backend."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:  # not Linux: no way to tell, so count it as pooled
        return False
    credentials = probe.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    peer_pid: int = struct.unpack("3i", credentials)[0]
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{backend_pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1]) == peer_pid
    return False
