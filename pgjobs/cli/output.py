"""How inspection commands print: rich tables for people, one JSON document for programs.

rich is imported only by the functions that draw, so commands that print plain text
(and `--help`) do not pay for it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.style import StyleType
    from rich.table import Column, Table

# Piped output is not wrapped at 80 columns; a table is only as wide as its content.
PIPE_WIDTH = 200
# Characters of job data a terminal would obey rather than show: C0 and C1 controls (ESC
# starts an escape sequence that recolours, moves the cursor or retitles the window; a
# newline or CR breaks a table's line) and the marks that reorder text on screen.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with its control characters written as escapes (`\\x1b`, `\\n`), so that
    job data (a task name, an argument, an error) is shown, never obeyed. JSON output
    needs none of it: it is exact, and escapes control characters itself."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(lambda match: _escape(match[0], keep_newlines), text)


def _escape(char: str, keep_newlines: bool) -> str:
    if keep_newlines and char == "\n":
        return char
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


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
    from rich.table import Column

    built = [
        Column(column, justify="right" if column in right else "left")
        if isinstance(column, str)
        else column
        for column in columns
    ]
    return table_class()(
        *built,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )


@cache
def table_class() -> type[Table]:
    """rich's Table, whose cells show control characters as escapes (`printable`): every
    table of the CLI is made of it, so no command prints job data raw."""
    from rich.table import Table

    class EscapingTable(Table):
        def add_row(
            self,
            *renderables: RenderableType | None,
            style: StyleType | None = None,
            end_section: bool = False,
        ) -> None:
            cells = [_printable_cell(cell) for cell in renderables]
            super().add_row(*cells, style=style, end_section=end_section)

    return EscapingTable


def _printable_cell(cell: RenderableType | None) -> RenderableType | None:
    from rich.text import Text

    if isinstance(cell, str):
        return printable(cell)
    if isinstance(cell, Text) and _UNPRINTABLE.search(cell.plain) is not None:
        return cell.blank_copy(printable(cell.plain))  # its style, not its spans
    return cell


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
