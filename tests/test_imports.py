"""The package's import graph, read from its own ``from tvaccine... import`` lines (at module level and
inside functions alike), has no circle: every module stands on modules below it, none imports one above."""

import ast
from pathlib import Path

import tvaccine

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from a import b`` counts as ``a.b`` when that is a module, and
    ``from tvaccine import name`` as the module the package's lazy export table loads for it)."""
    paths = {module_name(p): p for p in (SRC / "tvaccine").rglob("*.py")}
    graph = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert not node.level, f"{name} imports relatively; the package imports by absolute name"
                base = node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths
                           else tvaccine._EXPORTS.get(a.name, base) if base == "tvaccine" else base for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in paths and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while node not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_finds_the_imports():
    graph = import_graph()
    assert "tvaccine.training" in graph["tvaccine.attack"] and "tvaccine.plots" in graph["tvaccine.report"]
    assert "tvaccine.layer_report" in graph["tvaccine.report"]  # a function-level import


def test_the_package_has_no_import_circle():
    assert [sorted(c) for c in cycles(import_graph())] == []


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_the_attack_does_not_stand_on_the_alignment():
    assert "tvaccine.alignment" not in import_graph()["tvaccine.attack"]
