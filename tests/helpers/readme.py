"""The README's sections and code blocks, for tests that check or run what it shows."""

from __future__ import annotations

import re

from tests.helpers.workers import REPO_ROOT

_FENCED = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_section(title: str) -> str:
    """The text of the README's `## title` section, up to the next one."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(section: str, language: str) -> list[str]:
    """The fenced code blocks of `section` in `language`, in order."""
    return [body for lang, body in _FENCED.findall(section) if lang == language]
