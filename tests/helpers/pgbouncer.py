"""A real PgBouncer in transaction pooling mode, in front of a given PostgreSQL.

Started as a subprocess from a config and an auth file in a temp dir, on a free loopback
port. PgBouncer refuses to run as root, so under root it runs as the unprivileged user
the embedded cluster would use (`pgjobs.embedded.server_user`). Used by the tests
(`tests/pgbouncer.py`) and by `bench/pooler.py`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgjobs.embedded.server_user import ServerUser, make_traversable, server_user_for

CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")
START_TIMEOUT = 15.0

CONFIG = """\
[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = {log_file}
pidfile = {pid_file}
"""


def pgbouncer_binary() -> str | None:
    """The pgbouncer program on this machine, or None (Debian puts it in /usr/sbin)."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in CANDIDATES if os.access(path, os.X_OK)), None)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _quote(value: str) -> str:
    """A value in a libpq-style connection string, quoted for pgbouncer.ini."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def running_pgbouncer(server_url: str) -> Iterator[str]:
    """Run PgBouncer in front of `server_url`; yields the conninfo that goes through it.

    Every server connection logs in as the server URL's user (with its password), and
    any client may connect as that user without a password.
    """
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    params = conninfo_to_dict(server_url)
    user = str(params.get("user") or os.environ.get("PGUSER") or _login_name())
    server = {key: str(params[key]) for key in ("host", "port", "password") if params.get(key)}
    server.update(user=user, dbname=str(params.get("dbname") or user))
    folder = Path(tempfile.mkdtemp(prefix="pgjobs-pgbouncer-"))
    try:
        run_as = server_user_for(folder)
        port = free_port()
        (folder / "users.txt").write_text(f'"{user}" ""\n')
        config = folder / "pgbouncer.ini"
        config.write_text(
            CONFIG.format(
                server=" ".join(f"{key}={_quote(value)}" for key, value in server.items()),
                port=port,
                auth_file=folder / "users.txt",
                log_file=folder / "pgbouncer.log",
                pid_file=folder / "pgbouncer.pid",
            )
        )
        if run_as is not None:
            _hand_over(folder, run_as)
        process = _start(binary, config, folder, run_as)
        try:
            url = make_conninfo(server_url, host="127.0.0.1", port=str(port), user=user)
            _wait_ready(url, process, folder / "pgbouncer.log")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _login_name() -> str:
    import getpass

    return getpass.getuser()


def _hand_over(folder: Path, user: ServerUser) -> None:
    """Let the unprivileged user reach the folder and write its log and pid file there."""
    make_traversable(folder, user)
    for path in (folder, *folder.iterdir()):
        os.chown(path, user.uid, user.gid)


def _start(
    binary: str, config: Path, folder: Path, user: ServerUser | None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, str(config)],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=None if user is None else user.uid,
        group=None if user is None else user.gid,
        extra_groups=None if user is None else list(user.groups),
    )


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until a query goes through PgBouncer to the server."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with status {process.returncode}: {_tail(log)}")
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not answer: {error}; {_tail(log)}") from error
        time.sleep(0.05)


def _tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(log.read_text(errors="replace").splitlines()[-5:])
    return "no log"
