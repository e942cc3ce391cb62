"""Imports run one way: no cycle among `service/` packages, `TYPE_CHECKING` imports included."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"


def _unit(module: str) -> str | None:
    """The package or top-level module of `service` that a dotted import lands in."""
    parts = module.split(".")
    if parts[0] != "service" or len(parts) < 2:
        return None
    name = parts[1]
    return name if (SERVICE / name).is_dir() or (SERVICE / f"{name}.py").exists() else None


def _imports(path: Path, root: Path = SERVICE) -> set[str]:
    """Every absolute `service.*` module this file imports, wherever the import statement is."""
    package = ["service", *path.relative_to(root).parts[:-1]]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)  # `from service import x`
    return out


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SERVICE.rglob("*.py"):
        src = path.relative_to(SERVICE).parts[0].removesuffix(".py")
        for module in _imports(path):
            dst = _unit(module)
            if dst is not None and dst != src:
                graph[src].add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_among_service_packages() -> None:
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_graph_sees_type_checking_and_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "stats").mkdir()
    src = tmp_path / "stats" / "summary.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import math\n"
        "if TYPE_CHECKING:\n"
        "    from service.state import AppState\n"
    )
    found = _imports(src, root=tmp_path)
    assert "service.state" in found
    assert "service.stats.math" in found


def test_tables_import_only_the_database_base() -> None:
    for path in (SERVICE / "models").glob("*.py"):
        for module in _imports(path):
            unit = _unit(module)
            assert unit in (None, "db", "models"), f"{path.name} imports {module}"
