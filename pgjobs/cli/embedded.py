"""`pgjobs url` and `pgjobs embedded status|stop`: which database, and the local one.

`pgjobs url` lets a shell or an application use the very database pgjobs uses
(`export PGJOBS_DATABASE_URL=$(pgjobs url)`): the URL goes to stdout alone, while the
note that the embedded cluster was started goes to stderr. The `embedded` commands look
after that cluster without the user needing pg_ctl, or the server's OS user when pgjobs
runs as root.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pgjobs.cli.common import Command, DatabaseUrlOption, JsonOption, command_group
from pgjobs.cli.output import print_json
from pgjobs.config import database_url_from_env, resolve_database_url

if TYPE_CHECKING:
    from pgjobs.embedded import ClusterStatus

embedded_cli = command_group(
    "embedded",
    "The local PostgreSQL pgjobs uses when no database is configured.",
)


def url(database_url: DatabaseUrlOption = None) -> None:
    """Print the database URL pgjobs uses.

    The configured one (--database-url, PGJOBS_DATABASE_URL, DATABASE_URL), else the
    embedded cluster's, started if needed. Only the URL goes to stdout, so
    `export PGJOBS_DATABASE_URL=$(pgjobs url)` works.
    """
    print(resolve_database_url(database_url))


@embedded_cli.command(cls=Command)
def status(as_json: JsonOption = False) -> None:
    """Show the embedded cluster: running or not, data folder, URL, binaries."""
    from pgjobs.embedded import default_cluster

    found = default_cluster().status()
    if as_json:
        print_json(_status_json(found))
    else:
        print("\n".join(_status_lines(found)))


@embedded_cli.command(cls=Command)
def stop() -> None:
    """Stop the embedded cluster (a fast shutdown: open sessions end)."""
    from pgjobs.embedded import default_cluster

    cluster = default_cluster()
    if cluster.stop():
        message = f"stopped the embedded PostgreSQL in {cluster.data_dir}"
    else:
        message = f"the embedded PostgreSQL in {cluster.data_dir} was not running"
    print(f"pgjobs: {message}", file=sys.stderr)


def _state(found: ClusterStatus) -> str:
    if found.running:
        return "running"
    return "stopped" if found.data_version else "not created"


def _status_lines(found: ClusterStatus) -> list[str]:
    state = _state(found)
    if found.running:
        since = f", since {found.started_at:%Y-%m-%d %H:%M:%S} UTC" if found.started_at else ""
        headline = f"running (pid {found.pid} as {found.user}{since})"
    elif state == "stopped":
        headline = "stopped; the next command that needs a database starts it"
    else:
        headline = "not created yet; the first command that needs a database creates it"
    folder = str(found.data_dir)
    if found.data_version:
        folder += f" (PostgreSQL {found.data_version})"
    rows = [("data folder", folder)]
    if found.url:
        rows.append(("url", found.url))
    if found.bindir is not None:
        version = f"PostgreSQL {found.server_version}" if found.server_version else "unknown"
        rows.append(("server", version))
        rows.append(("binaries", f"{found.bindir} ({found.binaries_source})"))
    else:
        rows.append(("binaries", f"none: {found.binaries_problem}"))
    rows.append(("log", str(found.log_file)))
    lines = [f"embedded PostgreSQL: {headline}"]
    lines += [f"  {name:<12} {value}" for name, value in rows]
    if not _used_by_commands(found):
        lines.append(
            "  note: PGJOBS_DATABASE_URL or DATABASE_URL names another database, so commands "
            "do not use this cluster"
        )
    return lines


def _status_json(found: ClusterStatus) -> dict[str, Any]:
    return {
        "state": _state(found),
        "running": found.running,
        "pid": found.pid,
        "user": found.user,
        "started_at": found.started_at,
        "data_dir": str(found.data_dir),
        "data_version": found.data_version,
        "url": found.url,
        "server_version": found.server_version,
        "bindir": None if found.bindir is None else str(found.bindir),
        "binaries_source": found.binaries_source,
        "binaries_problem": found.binaries_problem,
        "log_file": str(found.log_file),
        "used_by_commands": _used_by_commands(found),
    }


def _used_by_commands(found: ClusterStatus) -> bool:
    """False when a configured URL sends commands elsewhere; `$(pgjobs url)` names this one."""
    configured = database_url_from_env()
    return configured is None or configured == found.url
