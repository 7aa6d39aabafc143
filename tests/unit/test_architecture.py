"""The package's shape: no import cycles, and few top-level modules (the subpackages hold the rest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

import review_toolkit

PACKAGE = Path(review_toolkit.__file__).parent


def strongly_connected_components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the import graph is deep enough to matter for recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def import_graph() -> dict[str, set[str]]:
    """Every review_toolkit module and the review_toolkit modules it imports, anywhere in its code
    (inside functions too); imports only for type checkers are left out."""
    graph = grimp.build_graph("review_toolkit", exclude_type_checking_imports=True)
    return {
        module: {imported for imported in graph.find_modules_directly_imported_by(module) if imported in graph.modules}
        for module in graph.modules
    }


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [c for c in strongly_connected_components(graph) if len(c) > 1] == [{"a", "b", "c"}]


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert "review_toolkit.accel.plan" in graph and "review_toolkit.train.pipeline" in graph
    cycles = [sorted(component) for component in strongly_connected_components(graph) if len(component) > 1]
    assert cycles == []


def test_the_package_root_holds_at_most_a_dozen_modules():
    modules = sorted(path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py")
    assert len(modules) <= 12, modules


def test_the_layers_contract_holds():
    """``lint-imports`` with the repository's .importlinter: every module imports only from layers below it."""
    repository = PACKAGE.parent
    command = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(command), "--config", str(repository / ".importlinter"), "--no-cache"],
        cwd=repository, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout
