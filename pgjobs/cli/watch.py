"""Redrawing a command's output in place until Ctrl-C (`pgjobs stats --watch`).

rich's Live display rewrites the same lines of the terminal instead of scrolling. Ctrl-C
is how a person stops watching, not an error: it ends the command with status 0 and no
traceback. A database that goes away while watching shows as a line in the display, and
the next redraw tries again.

Ctrl-C is also remembered, not only raised: Python drops a KeyboardInterrupt that lands
while an object's `__del__` runs (it prints "Exception ignored" and goes on), and a
redraw destroys connections' cursors and rich's renderables all the time. A watch that
lost its Ctrl-C so kept redrawing (seen once in the test suite on a busy machine); the
remembered press ends it at the next redraw instead.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from pgjobs.bounds import check_seconds
from pgjobs.cli.output import console
from pgjobs.errors import ConfigurationError, PgJobsError

if TYPE_CHECKING:
    from rich.console import RenderableType

DEFAULT_INTERVAL = 2.0
# Faster than this the query load is pointless and the display flickers.
MIN_INTERVAL = 0.1


def watch_interval(seconds: float | None, *, watch: bool, as_json: bool) -> float:
    """The seconds between redraws, or a ConfigurationError saying what is wrong."""
    if not watch:
        raise ConfigurationError(f"SECONDS ({seconds:g}) is the interval of --watch; add --watch")
    if as_json:
        raise ConfigurationError("--watch redraws a table; it cannot be combined with --json")
    every = DEFAULT_INTERVAL if seconds is None else seconds
    if not math.isfinite(every) or every < MIN_INTERVAL:
        raise ConfigurationError(f"--watch takes at least {MIN_INTERVAL:g} seconds, got {every:g}")
    return check_seconds("--watch", every, error=ConfigurationError)  # what a sleep can take


def watch_live(draw: Callable[[], list[RenderableType]], every: float, title: str) -> None:
    """Redraw `draw()` under a title line every `every` seconds until Ctrl-C."""
    from rich.live import Live

    ctrl_c = _CtrlC()
    previous = signal.signal(signal.SIGINT, ctrl_c.press)
    try:
        with Live(console=console(), auto_refresh=False) as live:
            while not ctrl_c.pressed:
                live.update(_frame(draw, every, title), refresh=True)
                time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)


class _CtrlC:
    """SIGINT's handler while watching: remembers the press, then interrupts as Python's
    own handler does (a sleep or a query ends at once)."""

    pressed = False

    def press(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True
        raise KeyboardInterrupt


def _frame(draw: Callable[[], list[RenderableType]], every: float, title: str) -> RenderableType:
    import psycopg
    from rich.console import Group
    from rich.text import Text

    from pgjobs.db import first_line

    header = Text(
        f"{title}, every {every:g}s, at {time.strftime('%H:%M:%S')} (Ctrl-C to stop)",
        style="dim",
    )
    try:
        body = draw()
    except (PgJobsError, psycopg.Error) as error:
        body = [Text(f"cannot read the queue: {first_line(error)}; retrying", style="red")]
    return Group(header, "", *body)
