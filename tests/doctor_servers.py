"""Servers the doctor's tests need beyond the session's, started from the local binaries.

The session's server runs with `wal_level = replica` and `max_prepared_transactions = 0`,
so it can hold neither a logical slot nor a prepared transaction. `replication_cluster()`
starts one that can, from binaries that ship the pgstattuple extension when the machine
has some (Debian's `postgresql-15` does; the bundled server does not). `hot_standby()`
clones it with pg_basebackup into a standby that feeds its xmin back through a physical
slot (`hot_standby_feedback`): the only way a slot's `xmin`, the one that holds back
every table, can be set.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from pgjobs.embedded import LocalCluster, find_server_binaries
from pgjobs.embedded.server_user import run, server_user_for

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
REPLICATION = {"wal_level": "logical", "max_prepared_transactions": "4"}
# A standby needs at least the primary's max_prepared_transactions; its feedback comes
# every second rather than every ten.
STANDBY = {
    **FAST,
    "max_prepared_transactions": "4",
    "hot_standby_feedback": "on",
    "wal_receiver_status_interval": "1",
}


def has_pgstattuple(bindir: Path) -> bool:
    """Whether the PostgreSQL of `bindir` ships the pgstattuple extension."""
    try:
        sharedir = subprocess.run(
            [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return (Path(sharedir) / "extension" / "pgstattuple.control").exists()


def contrib_bindir() -> Path | None:
    """The first server binaries on this machine that ship pgstattuple: the ones pgjobs
    would use, else an installed PostgreSQL's."""
    found = find_server_binaries()
    candidates = [found, *sorted(map(Path, glob.glob("/usr/lib/postgresql/*/bin")), reverse=True)]
    return next((bindir for bindir in candidates if has_pgstattuple(bindir)), None)


@contextlib.contextmanager
def replication_cluster() -> Iterator[LocalCluster]:
    """A throwaway running cluster with logical decoding and prepared transactions."""
    root = Path(tempfile.mkdtemp(prefix="pgjobs-doctor-"))
    cluster = LocalCluster(
        root / "pgdata", bindir=contrib_bindir(), server_options={**FAST, **REPLICATION}
    )
    try:
        cluster.ensure_running()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def hot_standby(primary: LocalCluster, slot: str) -> Iterator[LocalCluster]:
    """A running hot standby of `primary` streaming through the physical slot `slot`
    (created here), with hot_standby_feedback on. Stopped and deleted on exit; the slot
    is the caller's to drop."""
    server = conninfo_to_dict(primary.ensure_running())
    root = Path(tempfile.mkdtemp(prefix="pgjobs-standby-"))
    data_dir = root / "pgdata"
    user = server_user_for(data_dir)
    if user is not None:  # pg_basebackup writes the files the standby's server owns
        shutil.chown(root, user.uid, user.gid)
    standby = LocalCluster(data_dir, bindir=primary.bindir, server_options=STANDBY)
    try:
        code, output = run(
            [
                str(primary.bindir / "pg_basebackup"),
                f"--host={server['host']}",
                f"--port={server['port']}",
                "--username=postgres",
                f"--pgdata={data_dir}",
                "--write-recovery-conf",
                f"--slot={slot}",
                "--create-slot",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            user,
        )
        if code != 0:
            raise RuntimeError(f"pg_basebackup failed: {output}")
        # The primary's socket lock file is copied with its data; the standby makes its own.
        for lock in data_dir.glob(".s.PGSQL.*.lock"):
            lock.unlink()
        standby.ensure_running()
        yield standby
    finally:
        try:
            standby.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
