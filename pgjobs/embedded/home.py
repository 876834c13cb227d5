"""The default cluster's home, and throwaway clusters for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from pgjobs.embedded.cluster import USE_YOUR_OWN, LocalCluster
from pgjobs.errors import ConfigurationError


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


def default_cluster() -> LocalCluster:
    """The cluster commands use when no database is configured: `pgdata` in `default_home()`.

    Creates the home folder, so that a home that is a file or cannot be created is one
    clear `ConfigurationError` here rather than an OSError deep inside a start.
    """
    home = default_home()
    where = "PGJOBS_HOME=" if os.environ.get("PGJOBS_HOME") else "the pgjobs data folder "
    problem = None
    if home.exists() and not home.is_dir():
        problem = "is not a folder"
    else:
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            problem = f"cannot be created ({error.strerror})"
        else:
            if not os.access(home, os.W_OK | os.X_OK):
                problem = "is not writable"
    if problem:
        raise ConfigurationError(
            f"{where}{home} {problem}; set PGJOBS_HOME to a folder pgjobs may create and "
            f"write, or {USE_YOUR_OWN}"
        )
    return LocalCluster(home / "pgdata")


def default_database_url() -> str:
    """The URL of the default cluster (see `default_cluster()`), started if needed.

    Says once on stderr, when it had to start the server, where the data lives, how to stop
    it and how to use a real server instead; later calls find the server running and stay
    quiet.
    """
    cluster = default_cluster()
    url, started = cluster._ensure_running()
    if started:
        print(
            f"pgjobs: started the embedded PostgreSQL with its data in {cluster.data_dir} "
            f"(`pgjobs embedded stop` stops it); {USE_YOUR_OWN}",
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
