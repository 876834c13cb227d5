"""Finding one's way around the command line: help, version, and a quick start."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer

import pgjobs
from pgjobs.cli import cli, main
from tests.helpers import pgjobs as run_pgjobs

Capsys = pytest.CaptureFixture[str]
# Typer's type placeholders (`<list[int]>`, `<float>`) and required-argument braces.
RAW_METAVAR = re.compile(r"<[a-z][^>\s]*>|\{[A-Za-z_]+\}")
# Imported by commands that need them, never by starting the command line.
HEAVY_MODULES = ["alembic", "pgjobs.demo.tour", "pgjobs.worker", "rich", "sqlalchemy"]


def command_paths() -> list[list[str]]:
    """Every command and command group, as the words that name it."""
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(cli), [])
    return paths


def help_of(capsys: Capsys, *args: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_bare_pgjobs_prints_its_help_and_succeeds() -> None:
    result = run_pgjobs()

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: pgjobs [OPTIONS] COMMAND")
    assert "Commands:" in result.stdout and "work" in result.stdout
    assert result.stderr == ""


@pytest.mark.slow
def test_version_prints_the_package_version() -> None:
    result = run_pgjobs("--version")

    assert (result.returncode, result.stdout) == (0, f"pgjobs {pgjobs.__version__}\n")


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_dash_h_is_help_everywhere(capsys: Capsys, path: list[str]) -> None:
    long = help_of(capsys, *path)

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*path, "-h"])

    assert exit_.value.code == 0
    assert capsys.readouterr().out == long


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_help_names_values_plainly(capsys: Capsys, path: list[str]) -> None:
    text = help_of(capsys, *path)

    assert not RAW_METAVAR.findall(text), text


def test_help_names_arguments_by_their_metavar(capsys: Capsys) -> None:
    text = help_of(capsys, "retry")

    assert text.startswith("Usage: pgjobs retry [OPTIONS] ID...\n")
    assert "\n  ID...  Job ids.\n" in text


def heavy_modules_after(*argv: str) -> list[str]:
    """The HEAVY_MODULES a fresh interpreter has imported after importing the command
    line and, given `argv`, running `pgjobs ARGV` successfully."""
    run = f"try:\n    main({list(argv)!r})\nexcept SystemExit as exit_:\n    assert not exit_.code"
    code = f"import json, sys\nfrom pgjobs.cli import main\n{run if argv else ''}\n"
    code += "print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    return [name for name in HEAVY_MODULES if name in loaded]


@pytest.mark.slow
def test_starting_the_command_line_imports_no_heavy_module() -> None:
    assert heavy_modules_after() == []


@pytest.mark.slow
def test_help_imports_no_heavy_module() -> None:
    assert heavy_modules_after("work", "--help") == []


@pytest.mark.slow
def test_stats_imports_neither_sqlalchemy_nor_alembic(database_url: str, schema: str) -> None:
    loaded = heavy_modules_after("stats", "--database-url", database_url, "--schema", schema)

    assert not {"alembic", "sqlalchemy", "pgjobs.worker"} & set(loaded)
