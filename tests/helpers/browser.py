"""The dashboard in a real browser: `pgjobs web` as a subprocess (`pgjobs_web`), and
Debian's Chromium, headless, driven by Playwright (`launch_chromium`, `PageWatch`).

Playwright never downloads a browser here (the machine's network is closed): it launches
/usr/bin/chromium, which `.ci/run` installs with apt. Without it the tests fail, saying
so; set `PGJOBS_SKIP_BROWSER_TESTS=1` to skip them instead on a machine without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Response,
    ViewportSize,
)

from tests.helpers.cli import INHERITED
from tests.helpers.waiting import wait_until
from tests.helpers.workers import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts,
# which this machine's closed network refuses; the sandbox needs privileges a container
# (and root) lacks.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
SKIP_VARIABLE = "PGJOBS_SKIP_BROWSER_TESTS"
# A folder that the tour's screenshots are also written to: `docs/images` refreshes the
# documentation's (docs/dashboard.md).
SCREENSHOTS_VARIABLE = "PGJOBS_WEB_SCREENSHOTS"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless; fails (or skips, when told to) without it."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get(SKIP_VARIABLE):
            pytest.skip(f"{reason}; skipped because {SKIP_VARIABLE} is set")
        pytest.fail(f"{reason}, as .ci/run does, or set {SKIP_VARIABLE}=1 to skip these tests")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
    )


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class ServerProcess:
    """An HTTP server as a subprocess on a free port of loopback, its output in a file;
    `start()` returns once `ready` answers 200. `pgjobs_web(...)` is `pgjobs web`."""

    def __init__(
        self,
        command: Callable[[int], list[str]],
        *,
        ready: str = "/",
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.port = free_port()
        self.command = command(self.port)
        self.ready = ready
        clean = {key: value for key, value in os.environ.items() if key not in INHERITED}
        self.env = {**clean, **(env or {})}
        self.cwd = cwd
        descriptor, path = tempfile.mkstemp(prefix="pgjobs-web-", suffix=".log")
        os.close(descriptor)
        self.log_path = Path(path)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._answers, timeout, interval=0.1, message=self.describe)
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited; {self.describe()}")
        try:
            return httpx.get(self.url(self.ready), timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def describe(self) -> str:
        return f"{' '.join(self.command)} logs:\n{self.log_path.read_text(errors='replace')}"

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log_path.unlink(missing_ok=True)


def pgjobs_web(database_url: str, schema: str, *options: str) -> ServerProcess:
    """`pgjobs web --port P --database-url … --schema … OPTIONS`, as a user starts it."""

    def command(port: int) -> list[str]:
        where = ["--database-url", database_url, "--schema", schema]
        return [sys.executable, "-m", "pgjobs", "web", "--port", str(port), *where, *options]

    return ServerProcess(command)


class PageWatch:
    """What went wrong in a page while a test used it: script errors (a Content Security
    Policy refusal among them) and responses of 400 or more (but the favicon's)."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        # A failed load is reported by _response, with its address.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.problems.append(f"console error: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.problems.append(f"{response.status} from {response.request.method} {response.url}")


def screenshot(
    page: Page, folder: Path, name: str, *, for_docs: bool = False, full_page: bool = True
) -> Path:
    """A PNG of the page in `folder` (the test's tmp_path); with `for_docs`, also in the
    folder `PGJOBS_WEB_SCREENSHOTS` names, when set."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    docs = os.environ.get(SCREENSHOTS_VARIABLE)
    if for_docs and docs:
        target = Path(docs) if Path(docs).is_absolute() else REPO_ROOT / docs
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)
    return path


def new_page(browser: Browser, **options: Any) -> Page:
    """A page of a fresh context (its own cookies), at the screenshots' size."""
    return browser.new_context(viewport=VIEWPORT, **options).new_page()
