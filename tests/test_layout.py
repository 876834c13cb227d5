"""The shape of the package: rules a reviewer would otherwise have to check by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pgjobs

PACKAGE = Path(pgjobs.__file__).parent
# store.py, and the cursor it keeps with each caller's connection.
DATA_ACCESS_LAYER = {PACKAGE / "store.py", PACKAGE / "reused_cursor.py"}
SQL_RUNNING_METHODS = {"execute", "executemany", "copy", "cursor", "exec_driver_sql", "stream"}


def calls_that_run_sql(path: Path) -> list[str]:
    """`module:line method` of every call to a method that runs SQL in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SQL_RUNNING_METHODS
    ]


def test_only_the_data_access_layer_runs_sql() -> None:
    offenders = [
        call
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in DATA_ACCESS_LAYER
        for call in calls_that_run_sql(path)
    ]
    assert offenders == []


def test_the_scan_finds_sql_where_it_is() -> None:
    # The rule above would pass vacuously if the scan found nothing anywhere.
    assert calls_that_run_sql(PACKAGE / "store.py")
