"""Running `pgjobs` as a user does: a real process, with nothing inherited from this shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).parents[1]
UNREACHABLE_URL = "postgresql://x@127.0.0.1:1/db"
# Settings of the shell running the tests that would change what a command does.
INHERITED = {"PGJOBS_DATABASE_URL", "DATABASE_URL", "PGJOBS_SCHEMA", "PGJOBS_DEBUG", "PGJOBS_APP"}


def pgjobs(
    *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pgjobs ARGS` in `cwd`, with `env` added to a clean environment."""
    clean = {key: value for key, value in os.environ.items() if key not in INHERITED}
    return subprocess.run(
        [sys.executable, "-m", "pgjobs", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `pgjobs: error:` line a failed command must print, and nothing else."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgjobs: error: ")
    return lines[0]
