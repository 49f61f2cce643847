"""Data flows one way: no import cycles between the engine's modules, and the
lower layers (engine.kernels, engine.backends) never import the engine above them.

Only module-level imports count (the graph Python builds at import time); a
package's ``__init__`` re-exporting its own submodules is not a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"engine": "engine", "engine.backends": "backends", "engine.kernels": "kernels", "engine.bench": "bench"}


def _modules() -> dict[str, Path]:
    mods = {}
    for package, folder in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            if "results" in rel:
                continue
            rel = rel[:-1] if rel[-1] == "__init__" else rel
            mods[".".join((package, *rel))] = path
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in mods and t != name
                     and not (is_package and t.startswith(name + "."))}
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph = _graph()
    state, stack, cycles = {}, [], []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_lower_layers_do_not_import_the_engine_above():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith("engine.kernels"):
            assert all(d.startswith("engine.kernels") for d in deps), (name, deps)
        if name.startswith("engine.backends"):
            assert all(d.startswith(("engine.backends", "engine.kernels")) for d in deps), (name, deps)
