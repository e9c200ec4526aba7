"""Imports go one way: meter <- sync <- worker, api <- cli. The API and the worker share what
they must (queue names, jobs' contracts) through sync/, never through each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("meter", "sync", "worker", "api", "cli", "bench")
# What each package may import from the others (itself always allowed).
ALLOWED: dict[str, frozenset[str]] = {
    "meter": frozenset(),
    "sync": frozenset({"meter"}),
    "worker": frozenset({"meter", "sync"}),
    "api": frozenset({"meter", "sync"}),
    "bench": frozenset({"meter", "sync"}),
    "cli": frozenset({"meter", "sync", "worker", "api", "bench"}),
}


def imported_packages(source: Path) -> set[str]:
    """Our top-level packages a module imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {other}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for other in sorted(imported_packages(path) - ALLOWED[package] - {package})
    ]
    assert crossings == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.queues import SYNC\n    import api.state\n")
    assert imported_packages(module) == {"worker", "api"}
