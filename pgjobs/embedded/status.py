"""What `pgjobs embedded status` shows of a local cluster."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class ClusterStatus:
    """What a cluster looks like right now, read without starting or changing anything.

    `pid`, `user` (the OS user the server runs as), `started_at` and `url` are None when
    the server is not running, `data_version` (a major version) before the data folder is
    initialised. The binaries are the running server's own, or when it is stopped the ones
    the next start would use; when there are none, `binaries_problem` says why.
    """

    data_dir: Path
    log_file: Path
    data_version: str | None
    pid: int | None
    user: str | None
    started_at: datetime | None
    url: str | None
    bindir: Path | None
    binaries_source: str | None
    server_version: str | None
    binaries_problem: str | None

    @property
    def running(self) -> bool:
        """Whether a server process for the data folder is alive."""
        return self.pid is not None
