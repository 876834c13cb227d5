"""One local PostgreSQL cluster: initialise, start, stop and describe it.

Everything drives `initdb` and `pg_ctl` directly, whichever binaries were found, so there
is one way a cluster is made. The default cluster, the one commands use when no database
is configured, lives in `default_home()` (embedded/home.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from pgjobs.embedded.binaries import describe_source, find_server_binaries, has_server_programs
from pgjobs.embedded.server_user import (
    ServerUser,
    grant_access,
    key_line,
    make_traversable,
    run,
    server_user_for,
)
from pgjobs.embedded.status import ClusterStatus
from pgjobs.errors import ConfigurationError, EmbeddedUnavailableError, PgJobsError

_DEFAULT_PORT = "5432"
_DEFAULT_OPTIONS = {"max_connections": "200", "port": _DEFAULT_PORT}
# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
_MAX_SOCKET_PATH_BYTES = 103 if sys.platform == "darwin" else 107
_SETTINGS_FILE = "pgjobs.conf"
_INCLUDE_SETTINGS = f"include_if_exists = '{_SETTINGS_FILE}'"
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_SERVER_VERSION = re.compile(r"\(PostgreSQL\)\s+(\S+)")
_OFF = frozenset({"off", "false", "no", "0"})
USE_YOUR_OWN = (
    "set PGJOBS_DATABASE_URL=postgresql://user:password@host/dbname to use your own server"
)


class LocalCluster:
    """A PostgreSQL cluster in `data_dir` that this machine runs for pgjobs.

    Every check-then-act step (is it initialised? is it running?) happens under an
    exclusive `flock` on `<data_dir>.lock`, so any number of processes can call
    `ensure_running()` at once and exactly one of them initialises and starts the server.
    The server runs detached and outlives the process that started it; `stop()` ends it.
    When pgjobs runs as root, the server runs as an unprivileged user (see `server_user`).
    """

    def __init__(
        self,
        data_dir: Path,
        bindir: Path | None = None,
        server_options: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the cluster; nothing is touched until `ensure_running()`.

        `server_options` are extra postgresql.conf settings applied at each start, e.g.
        `fsync=off` for a test cluster whose data may be lost. With `fsync=off`, initdb
        skips its final sync too.
        """
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._bindir = bindir
        self.server_options = {**_DEFAULT_OPTIONS, **(server_options or {})}
        for name in self.server_options:
            if not _SETTING_NAME.fullmatch(name):
                raise ConfigurationError(f"{name!r} is not a PostgreSQL setting name")
        self.log_file = self.data_dir.with_name(self.data_dir.name + ".log")
        self._lock_file = self.data_dir.with_name(self.data_dir.name + ".lock")

    @property
    def bindir(self) -> Path:
        """The server binaries, found on first use so that describing a cluster never fails."""
        if self._bindir is None:
            self._bindir = find_server_binaries()
        return self._bindir

    def ensure_running(self) -> str:
        """Initialise and start the cluster as needed; return its libpq URL (Unix socket)."""
        return self._ensure_running()[0]

    def is_running(self) -> bool:
        """Whether a server process for this data dir is alive, whoever started it."""
        return self._running_pid() is not None

    def stop(self) -> bool:
        """Stop the server with a fast shutdown (sessions are ended).

        Returns whether a server was running; stopping a stopped cluster does nothing.
        """
        with self._locked():
            if not self.is_running():
                return False
            # Stop with the programs that started the server: the ones found now may be of
            # another version, or gone (the extra uninstalled) while the server still runs.
            code, output = self._run_pg_ctl(
                "-m", "fast", "-w", "stop", bindir=self._running_bindir()
            )
            if code != 0 and self.is_running():
                raise self._failure("could not be stopped", output)
            # Tidy the shared temp dir; the next start makes the socket dir again.
            with contextlib.suppress(OSError):
                self._fallback_socket_dir().rmdir()
            return True

    def pg_ctl(self, *args: str) -> None:
        """Run another pg_ctl action on this cluster, e.g. `pg_ctl("restart", "-m", "fast")`."""
        with self._locked():
            code, output = self._run_pg_ctl(*args)
            if code != 0:
                raise self._failure(f"failed `pg_ctl {' '.join(args)}`", output)

    def status(self) -> ClusterStatus:
        """A snapshot for people: taken without the lock, so it never waits for a start."""
        pid = self._running_pid()
        lines = self._postmaster_pid_lines() if pid is not None else []
        url = None
        if pid is not None:
            with contextlib.suppress(PgJobsError):
                url = self._url()
        started_at = None
        if len(lines) > 2 and lines[2].strip().isdigit():
            started_at = datetime.fromtimestamp(int(lines[2]), tz=timezone.utc)
        bindir = self._running_bindir() if pid is not None else None
        problem = None
        if bindir is None:
            try:
                bindir = self.bindir
            except EmbeddedUnavailableError as error:
                problem = str(error)
        return ClusterStatus(
            data_dir=self.data_dir,
            log_file=self.log_file,
            data_version=self._data_version(),
            pid=pid,
            user=self._owner() if pid is not None else None,
            started_at=started_at,
            url=url,
            bindir=bindir,
            binaries_source=None if bindir is None else describe_source(bindir),
            server_version=None if bindir is None else _binaries_version(bindir, None),
            binaries_problem=problem,
        )

    def _ensure_running(self) -> tuple[str, bool]:
        """The URL, and whether this call had to initialise or start the server."""
        with self._locked():
            if self.is_running():
                return self._url(), False
            user = server_user_for(self.data_dir)
            if user is not None:
                grant_access(user, self.data_dir, self.bindir)
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(user)
            self._check_versions_match(user)
            self._write_settings(self._prepare_socket_dir(user), user)
            self._prepare_log(user)
            code, output = self._run_pg_ctl("-w", "start")
            if code != 0:
                raise self._failure("failed to start", output)
            return self._url(), True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _postmaster_pid_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def _running_pid(self) -> int | None:
        lines = self._postmaster_pid_lines()
        if not lines:
            return None
        try:
            pid = int(lines[0])
            os.kill(pid, 0)
        except (ValueError, OSError):
            # No such process, or a pid reused by another user's process (as pg_ctl judges).
            return None
        return pid

    def _running_bindir(self) -> Path | None:
        """The bin folder of the server last started here, read from postmaster.opts."""
        try:
            options = (self.data_dir / "postmaster.opts").read_text()
        except OSError:
            return None
        # The server writes its program's path as is, then each argument in double quotes.
        program = options.split(' "', 1)[0].strip()
        bindir = Path(program).parent
        return bindir if program and has_server_programs(bindir) else None

    def _data_version(self) -> str | None:
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            return None

    def _owner(self) -> str | None:
        try:
            uid = self.data_dir.stat().st_uid
        except OSError:
            return None
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def _url(self) -> str:
        # postmaster.pid lines: pid, data dir, start time, port, first socket dir, ...
        lines = self._postmaster_pid_lines()
        if len(lines) < 5 or not lines[4].strip():
            raise PgJobsError(
                f"the PostgreSQL server in {self.data_dir} is running without a Unix socket; "
                f"stop it and let pgjobs start it, see {self.log_file}"
            )
        port, socket_dir = lines[3].strip(), lines[4].strip()
        return f"postgresql://postgres@/postgres?host={quote(socket_dir, safe='/')}&port={port}"

    def _initdb(self, user: ServerUser | None) -> None:
        """Create the cluster in a staging dir and rename it into place, so a crash midway
        never leaves a half-made data dir that blocks the next attempt."""
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PgJobsError(
                f"{self.data_dir} is not empty and is not a PostgreSQL data directory; "
                "move it away or set PGJOBS_HOME to another folder"
            )
        staging = self.data_dir.with_name(self.data_dir.name + ".initdb")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if user is not None:
            os.chown(staging, user.uid, user.gid)
        command = [
            str(self.bindir / "initdb"),
            f"--pgdata={staging}",
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if self.server_options.get("fsync", "on").lower() in _OFF:
            command.append("--no-sync")
        code, output = run(command, user)
        if code != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise PgJobsError(f"initdb failed for {self.data_dir}: {key_line(output)}")
        if self.data_dir.exists():
            self.data_dir.rmdir()
        staging.rename(self.data_dir)

    def _check_versions_match(self, user: ServerUser | None) -> None:
        """Refuse clearly, instead of with a log entry, when the binaries changed version."""
        data_version = (self.data_dir / "PG_VERSION").read_text().strip()
        version = _binaries_version(self.bindir, user)
        major = re.match(r"\d+", version or "")
        if major and major.group() != data_version:
            raise PgJobsError(
                f"{self.data_dir} holds a PostgreSQL {data_version} cluster but the server "
                f"binaries in {self.bindir} are PostgreSQL {major.group()}; set "
                f"PGJOBS_PG_BINDIR to a PostgreSQL {data_version} bin directory, or move the "
                "data dir away to start afresh"
            )

    def _fallback_socket_dir(self) -> Path:
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"pgjobs-{digest}"

    def _prepare_socket_dir(self, user: ServerUser | None) -> Path:
        """The data dir when its socket path fits the kernel's limit, else a private temp dir."""
        socket_name = f".s.PGSQL.{self.server_options['port']}"
        if len(os.fsencode(self.data_dir / socket_name)) <= _MAX_SOCKET_PATH_BYTES:
            return self.data_dir
        socket_dir = self._fallback_socket_dir()
        if len(os.fsencode(socket_dir / socket_name)) > _MAX_SOCKET_PATH_BYTES:
            raise PgJobsError(
                f"no Unix socket path short enough for {self.data_dir}; "
                "set TMPDIR or PGJOBS_HOME to a shorter folder"
            )
        with contextlib.suppress(FileExistsError):
            socket_dir.mkdir(mode=0o700)
        st = socket_dir.lstat()
        if user is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == 0:
            os.chown(socket_dir, user.uid, user.gid)
            st = socket_dir.lstat()
        # A shared temp dir: refuse a folder (or symlink) someone else planted there.
        owner = os.geteuid() if user is None else user.uid
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner:
            raise PgJobsError(f"{socket_dir} exists and does not belong to the server's user")
        if user is not None:
            make_traversable(socket_dir, user)
        return socket_dir

    def _write_settings(self, socket_dir: Path, user: ServerUser | None) -> None:
        """Keep pgjobs' settings in their own file so every start, restart, or a manual
        `pg_ctl start`, gets a Unix-socket-only server with the same settings."""
        settings = {
            **self.server_options,
            "listen_addresses": "",
            "unix_socket_directories": '"' + str(socket_dir).replace('"', '""') + '"',
        }
        lines = [f"{name} = {_conf_quote(value)}" for name, value in settings.items()]
        path = self.data_dir / _SETTINGS_FILE
        path.write_text(
            "# Written by pgjobs at each start of the embedded cluster; edits are lost.\n"
            + "\n".join(lines)
            + "\n"
        )
        config = self.data_dir / "postgresql.conf"
        if _INCLUDE_SETTINGS not in config.read_text():
            with config.open("a") as f:
                f.write(f"\n{_INCLUDE_SETTINGS}\n")
        if user is not None:
            os.chown(path, user.uid, user.gid)

    def _prepare_log(self, user: ServerUser | None) -> None:
        # The server appends to the log as its own user, next to the data dir it cannot create.
        self.log_file.touch()
        if user is not None:
            os.chown(self.log_file, user.uid, user.gid)

    def _run_pg_ctl(self, *args: str, bindir: Path | None = None) -> tuple[int, str]:
        """Run pg_ctl (from `bindir`, else `self.bindir`); the output returned includes
        what the server logged meanwhile."""
        # Always -l: without it a (re)started server would write to, and hold open, our output.
        pg_ctl = (bindir or self.bindir) / "pg_ctl"
        command = [str(pg_ctl), "-D", str(self.data_dir), "-l", str(self.log_file)]
        logged_before = _log_size(self.log_file)
        code, output = run([*command, *args], server_user_for(self.data_dir))
        return code, output + _read_from(self.log_file, logged_before)

    def _failure(self, what: str, output: str) -> PgJobsError:
        detail = key_line(output)
        return PgJobsError(
            f"the embedded PostgreSQL server in {self.data_dir} {what}: {detail}; "
            f"read {self.log_file} for details"
        )


def _binaries_version(bindir: Path, user: ServerUser | None) -> str | None:
    """The version `postgres --version` in `bindir` reports, e.g. "18.4"."""
    _, output = run([str(bindir / "postgres"), "--version"], user)
    match = _SERVER_VERSION.search(output)
    return match.group(1) if match else None


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""
