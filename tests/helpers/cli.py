"""Running `pgjobs` from a test: in this process (`run_cli`, fast, with capsys) or as a
user does, a real process with nothing inherited from this shell (`pgjobs`)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgjobs.cli import main
from tests.helpers.workers import REPO_ROOT

UNREACHABLE_URL = "postgresql://x@127.0.0.1:1/db"
# Settings of the shell running the tests that would change what a command does.
INHERITED = {"PGJOBS_DATABASE_URL", "DATABASE_URL", "PGJOBS_SCHEMA", "PGJOBS_DEBUG", "PGJOBS_APP"}


@dataclass
class Result:
    """What a CLI run printed and its exit status."""

    code: int
    out: str
    err: str


def run_cli(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str, *args: str
) -> Result:
    """Run `pgjobs ARGS --database-url … --schema …` in this process."""
    capsys.readouterr()
    try:
        main([*args, "--database-url", database_url, "--schema", schema])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:  # pragma: no cover - main always exits
        code = 0
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


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
