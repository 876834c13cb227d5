"""Progress on stderr, and the line of a failure that says why."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def last_line(output: str) -> str:
    """The line of a failed program's output that usually says why: its last."""
    lines = output.strip().splitlines()
    return lines[-1] if lines else "no output"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
