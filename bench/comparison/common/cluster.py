"""Setting up: the peers' virtualenv, the server's settings, one database per system, and
what ran (the report's header)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from ..drivers.base import System
from .config import DRIVER_TIMEOUT, PEER_REQUIREMENTS, PEERS_VENV, REPO
from .messages import say
from .scripts import describe, drive
from .tables import Target


def peers_python() -> Path:
    """The peers' virtualenv, created or updated when its requirements changed."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / "bench-requirements.txt"
    wanted = "\n".join(PEER_REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"installing the peers into {PEERS_VENV.relative_to(REPO)} (once)...")
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    install = [str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS]
    finished = subprocess.run(install, capture_output=True, text=True, timeout=DRIVER_TIMEOUT)
    if finished.returncode != 0:
        raise RuntimeError(f"pip could not install the peers:\n{finished.stderr[-3000:]}")
    stamp.write_text(wanted)
    return python


def database_url(cluster_url: str, database: str) -> str:
    """The cluster's URL pointing at another database (asyncpg needs the URL form)."""
    parts = urlsplit(cluster_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def prepare(cluster_url: str, system: System) -> Target:
    """A fresh database for the system, with the system's own schema installed in it."""
    database = "bench_" + system.name.replace("-", "_")
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")
    url = database_url(cluster_url, database)
    description = describe(system)
    admin = psycopg.connect(url, autocommit=True)
    target = Target(system, url, admin, description["sql"], description["version"])
    try:
        drive(target, "install")
    except BaseException:
        admin.close()
        raise
    return target


def versions(cluster_url: str, targets: list[Target], changed: Sequence[str]) -> dict[str, str]:
    """What ran: server, libraries, interpreter, and the server settings that matter most."""
    names = ["server_version", "fsync", "synchronous_commit", "shared_buffers"]
    names += [item.partition("=")[0] for item in changed if item.partition("=")[0] not in names]
    with psycopg.connect(cluster_url) as conn:
        show = {name: str(scalar_row(conn, f"SHOW {name}")) for name in names}
    header = {"PostgreSQL": show.pop("server_version")}
    header |= {t.system.name: t.version for t in targets if not t.system.variant_of}
    header["Python"] = sys.version.split()[0]
    header["CPUs"] = str(os.cpu_count())
    header["server"] = ", ".join(f"{k}={v}" for k, v in show.items())
    return header


def scalar_row(
    conn: psycopg.Connection[Any], query: str | sql.Composed, params: Sequence[Any] = ()
) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def apply_server_settings(cluster_url: str, settings: Sequence[str]) -> None:
    """`--pg-setting NAME=VALUE`: ALTER SYSTEM and a reload, before any system connects."""
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        for item in settings:
            name, _, value = item.partition("=")
            query = "SELECT context FROM pg_settings WHERE name = %s"
            context = scalar_row(conn, query, (name,))
            if context is None or not value:
                raise SystemExit(f"--pg-setting {item!r}: expected NAME=VALUE of a known setting")
            if context == "postmaster":
                raise SystemExit(f"--pg-setting {name}: needs a server restart, not supported")
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")
