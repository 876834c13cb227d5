"""The shape of the package: rules a reviewer would otherwise have to check by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pgjobs

PACKAGE = Path(pgjobs.__file__).parent
# The connector, and the cursor it keeps with each caller's connection.
CURSOR_OWNERS = {PACKAGE / "data" / "connector.py", PACKAGE / "data" / "reused_cursor.py"}
SQL_RUNNING_METHODS = {"execute", "executemany", "copy", "cursor", "exec_driver_sql", "stream"}
MAX_MODULE_LINES = 400
# The data layer may import only from itself and from these leaves.
DATA_LAYER_MAY_IMPORT = {"pgjobs.errors", "pgjobs.types", "pgjobs.storable"}


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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str) -> set[str]:
    """The package's modules that module `name` imports anywhere: at the top, inside a
    function, or under `if TYPE_CHECKING:` (a cycle there is a cycle all the same)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(_closest_module(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else _closest_module(base))
    found.discard("")
    found.discard(name)
    return found


def _closest_module(dotted: str) -> str:
    """The module `dotted` names, or the package that holds it ("" outside pgjobs)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules of `graph` (module: what it imports) that import each
    other, directly or round a loop."""
    order: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(name: str) -> None:  # Tarjan's strongly connected components
        order[name] = lowest[name] = len(order)
        stack.append(name)
        for other in graph[name]:
            if other not in order:
                visit(other)
                lowest[name] = min(lowest[name], lowest[other])
            elif other in stack:
                lowest[name] = min(lowest[name], order[other])
        if lowest[name] == order[name]:
            group = [stack.pop()]
            while group[-1] != name:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in sorted(graph):
        if name not in order:
            visit(name)
    return cycles


def test_only_the_connector_touches_a_cursor() -> None:
    offenders = [
        call
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in CURSOR_OWNERS
        for call in calls_that_run_sql(path)
    ]
    assert offenders == []


def test_the_scan_finds_sql_where_it_is() -> None:
    # The rule above would pass vacuously if the scan found nothing anywhere.
    assert calls_that_run_sql(PACKAGE / "data" / "connector.py")


def test_the_package_has_no_import_cycles() -> None:
    assert import_cycles({name: imported_modules(name) for name in MODULES}) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The rule above would pass vacuously if the finder saw no imports, or no loops.
    assert {"pgjobs.data.steps", "pgjobs.types"} <= imported_modules("pgjobs.data.producer")
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(loop) == [["a", "b", "c"]]


def test_the_data_layer_imports_nothing_above_it() -> None:
    offenders = {
        name: sorted(
            imported
            for imported in imported_modules(name)
            if not imported.startswith("pgjobs.data") and imported not in DATA_LAYER_MAY_IMPORT
        )
        for name in MODULES
        if name.startswith("pgjobs.data")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_module_is_longer_than_a_reader_can_hold() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_every_package_ships_in_the_wheel() -> None:
    """A package missing from pyproject's list works in a checkout (editable install) and
    is absent from the wheel: `import pgjobs.doctor` would fail for users."""
    import pytest

    from tests.helpers import REPO_ROOT

    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on; the main run has it

    listed = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    packages = {
        module_name(path)
        for path in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert packages - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
