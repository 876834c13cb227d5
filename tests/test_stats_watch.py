"""`pgjobs stats --watch [SECONDS]`: redraws in place on a terminal, and Ctrl-C ends it
cleanly (status 0, no traceback)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator

import pytest
from rich.text import Text

from pgjobs import App
from pgjobs.cli.watch import watch_live
from tests.helpers import REPO_ROOT, run_cli, wait_until

ROWS, COLUMNS = 40, 120
CTRL_C = b"\x03"
# rich's Live redraws by moving the cursor up over its last frame and erasing lines.
CURSOR_UP, ERASE_LINE = b"\x1b[1A", b"\x1b[2K"


class Terminal:
    """A command running on a pseudo-terminal of its own, as in a person's shell."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the terminal is its controlling terminal
            os.chdir(REPO_ROOT)
            os.execve(sys.executable, [sys.executable, *args], env)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.output = b""
        self.status: int | None = None

    def read(self) -> bytes:
        """Everything written so far (reads what is waiting, without blocking long)."""
        while select.select([self.fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            self.output += chunk
        return self.output

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, timeout: float) -> int:
        """The exit status, reading the output meanwhile so the child never blocks."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                self.read()
                return self.status
        raise AssertionError(f"still running after {timeout}s; output: {self.output[-2000:]!r}")

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal(database_url: str, schema: str) -> Iterator[Terminal]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PGJOBS_DATABASE_URL", "DATABASE_URL", "PGJOBS_SCHEMA", "COLUMNS")
    }
    watched = Terminal(
        "-m", "pgjobs", "stats", "--watch", "0.2",
        "--database-url", database_url, "--schema", schema,
        env={**env, "TERM": "xterm-256color"},
    )  # fmt: skip
    yield watched
    watched.close()


@pytest.mark.slow
def test_stats_watch_redraws_in_place_and_ctrl_c_exits_cleanly(
    app: App, terminal: Terminal
) -> None:
    # given the watch running on a terminal, showing an empty schema
    wait_until(
        lambda: b"no jobs in schema" in terminal.read(), 30, message=lambda: repr(terminal.output)
    )
    # when jobs arrive
    for _ in range(3):
        app.enqueue(None, "t", {}, queue="mail")
    # then a later frame shows them, drawn over the previous one
    wait_until(lambda: b"mail" in terminal.read(), 10, message=lambda: repr(terminal.output))
    drawn = terminal.read()
    assert CURSOR_UP in drawn and ERASE_LINE in drawn
    assert b"throughput:" in drawn and b"Ctrl-C to stop" in drawn

    # when the person presses Ctrl-C
    terminal.type(CTRL_C)

    # then it ends at once with status 0 and no traceback
    assert terminal.wait(10) == 0
    assert b"Traceback" not in terminal.output and b"aborted" not in terminal.output


def test_a_ctrl_c_whose_interrupt_was_swallowed_still_ends_the_watch() -> None:
    # given a watch whose second redraw is interrupted by Ctrl-C, and something in that
    # redraw swallows the KeyboardInterrupt (as Python does in an object's __del__)
    redraws = 0

    def draw() -> list[Text]:
        nonlocal redraws
        redraws += 1
        if redraws == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the interrupt lands here
            except KeyboardInterrupt:
                pass
        if redraws > 5:
            raise AssertionError("the watch went on redrawing after Ctrl-C")
        return [Text("frame")]

    # when the watch runs
    before = signal.getsignal(signal.SIGINT)
    watch_live(draw, 0.1, "title")

    # then it ends after that redraw, and gives SIGINT its handler back
    assert redraws == 2
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--watch", "--json"), "--watch redraws a table; it cannot be combined with --json"),
        (("--watch", "0.01"), "--watch takes at least 0.1 seconds, got 0.01"),
        (("--watch", "nan"), "--watch takes at least 0.1 seconds, got nan"),
        (("5",), "SECONDS (5) is the interval of --watch; add --watch"),
    ],
)
def test_watch_refuses_what_it_cannot_do_in_one_line(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    schema: str,
    args: tuple[str, ...],
    error: str,
) -> None:
    result = run_cli(capsys, database_url, schema, "stats", *args)

    assert (result.code, result.err) == (1, f"pgjobs: error: {error}\n")
