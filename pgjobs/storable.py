"""Text PostgreSQL cannot store: NUL characters and lone UTF-16 surrogates.

`jsonb` and `text` refuse both (`\\u0000` is "unsupported", a lone surrogate cannot be
encoded as UTF-8). Payloads that contain them are refused before anything is sent;
error messages and tracebacks, which pgjobs writes on a task's behalf, are repaired.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
# In JSON text made with ensure_ascii=False: a raw surrogate, or a \u0000 escape that is
# not itself an escaped backslash followed by "u0000".
_UNSTORABLE_IN_JSON = re.compile(r"[\ud800-\udfff]|(?<!\\)((?:\\\\)*)\\u0000")
_UNSTORABLE_IN_TEXT = re.compile("[\x00\ud800-\udfff]")


def json_is_storable(text: str) -> bool:
    """Whether JSON text (from `json.dumps(..., ensure_ascii=False)`) fits in jsonb."""
    if text.isascii() and "\\u0000" not in text:
        return True  # no surrogate, no NUL escape: the regex below is ten times slower
    return _UNSTORABLE_IN_JSON.search(text) is None


def storable_json(text: str) -> str:
    """JSON text with every unstorable character replaced by U+FFFD."""
    return _UNSTORABLE_IN_JSON.sub(lambda m: (m[1] or "") + REPLACEMENT, text)


def text_is_storable(text: str) -> bool:
    """Whether a plain string fits in a text column."""
    if text.isascii():
        return "\x00" not in text
    return _UNSTORABLE_IN_TEXT.search(text) is None
