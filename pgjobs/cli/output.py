"""How inspection commands print: rich tables for people, one JSON document for programs.

rich is imported only by the functions that draw, so commands that print plain text
(and `--help`) do not pay for it.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Column, Table

# Piped output is not wrapped at 80 columns; a table is only as wide as its content.
PIPE_WIDTH = 200


def console() -> Console:
    """The console tables are drawn on: the terminal's width, or PIPE_WIDTH when piped
    (unless COLUMNS says otherwise).

    Markup is off because job data (task names, error messages) may contain `[...]`.
    """
    from rich.console import Console

    drawn = Console(highlight=False, markup=False, emoji=False)
    if not drawn.is_terminal and "COLUMNS" not in os.environ:
        drawn.width = PIPE_WIDTH
    return drawn


def print_rich(*renderables: RenderableType, on: Console | None = None) -> None:
    """Print tables and text: styled on a terminal, plain text without trailing blanks
    otherwise."""
    drawn = on or console()
    if drawn.is_terminal:
        drawn.print(*renderables, sep="\n")
        return
    with drawn.capture() as captured:
        drawn.print(*renderables, sep="\n")
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def make_table(*columns: str | Column, right: tuple[str, ...] = ()) -> Table:
    """A borderless table with a header underline, its columns two spaces apart; columns
    named in `right` align right."""
    from rich import box
    from rich.table import Column, Table

    built = [
        Column(column, justify="right" if column in right else "left")
        if isinstance(column, str)
        else column
        for column in columns
    ]
    return Table(
        *built,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )


def print_json(document: Any) -> None:
    """Print one JSON document: timestamps in ISO 8601, durations in seconds."""
    print(json.dumps(document, indent=2, default=_json_value))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_time(value: datetime | None) -> str:
    """A timestamp to the second, or "-"."""
    return value.isoformat(sep=" ", timespec="seconds") if value is not None else "-"


def format_age(value: timedelta | None) -> str:
    """A duration in its two largest units ("3d 4h", "12m 5s", "8s"), or "-"."""
    if value is None:
        return "-"
    seconds = max(0, int(value.total_seconds()))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if parts or seconds >= size or unit == "s":
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def first_line(text: str | None, width: int = 60) -> str:
    """The first line of `text`, cut to `width` characters with an ellipsis."""
    lines = (text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"
