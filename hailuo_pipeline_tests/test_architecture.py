"""The layout's rules, read from the source: only the Dagster wing (defs/) imports Dagster, the core never
imports the wing, folders import each other without cycles, Dagster internals pass through one module,
and no module grows past 350 lines."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hailuo_pipeline"
WING = "defs"
ENTRY_POINTS = {"cli"}  # the command line drives the wing; nothing imports it
MAX_LINES = 350


def modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def folder(module: str) -> str:
    return module.split(".")[0]


def test_only_the_wing_imports_dagster():
    offenders = {
        name: sorted(i for i in imports(path) if i.split(".")[0].startswith("dagster"))
        for name, path in modules().items()
        if folder(name) != WING
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_dagster_internals_are_imported_in_one_module_only():
    users = {name for name, path in modules().items() if any(i.startswith("dagster._") for i in imports(path))}
    assert users == {"defs.compat"}


def test_the_core_never_imports_the_wing_or_the_command_line():
    forbidden = {f"hailuo_pipeline.{WING}", *(f"hailuo_pipeline.{e}" for e in ENTRY_POINTS)}
    offenders = {
        name: sorted(i for i in imports(path) if any(i == f or i.startswith(f + ".") for f in forbidden))
        for name, path in modules().items()
        if folder(name) not in {WING, *ENTRY_POINTS}
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_folders_import_each_other_without_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules().items():
        for imported in imports(path):
            if imported.startswith("hailuo_pipeline."):
                target = imported.split(".")[1]
                if target != folder(name) and (PACKAGE / target).is_dir():
                    graph[folder(name)].add(target)
    seen: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if seen.get(node) == "done":
            return
        if seen.get(node) == "open":
            pytest.fail(f"import cycle between folders: {' -> '.join([*trail, node])}")
        seen[node] = "open"
        for nxt in sorted(graph[node]):
            visit(nxt, [*trail, node])
        seen[node] = "done"

    for node in sorted(graph):
        visit(node, [])


def test_no_module_is_over_the_line_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_compat_fence_imports_on_this_dagster():
    from hailuo_pipeline.defs import compat

    assert all(getattr(compat, name) is not None for name in compat.__all__)
