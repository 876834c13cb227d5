"""Sections and code blocks of the README and the docs, for tests that check or run them."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.workers import REPO_ROOT

_FENCED = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def doc_section(path: str | Path, title: str) -> str:
    """The text of the heading `title` of a markdown file, up to the next heading as high.

    `path` is relative to the repository (`"README.md"`, `"docs/testing.md"`). Any heading
    level matches; the section holds its subsections. Lines in fenced code blocks are
    never headings (a Python comment is not a title).
    """
    lines = (REPO_ROOT / path).read_text().splitlines(keepends=True)
    headings: list[tuple[int, int, str]] = []  # (line number, level, title)
    in_code = False
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and (heading := _HEADING.match(line)):
            headings.append((number, len(heading.group(1)), heading.group(2)))
    for index, (start, level, text) in enumerate(headings):
        if text == title:
            ends = [number for number, deeper, _ in headings[index + 1 :] if deeper <= level]
            return "".join(lines[start : ends[0] if ends else len(lines)])
    raise LookupError(f"{path} has no heading {title!r}")


def code_blocks(section: str, language: str) -> list[str]:
    """The fenced code blocks of `section` in `language`, in order."""
    return [body for lang, body in _FENCED.findall(section) if lang == language]
