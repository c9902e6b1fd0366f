"""No import cycles inside the package: a static check of every import statement in dropblock/.

A cycle works only as long as each side imports the other late enough (inside a function, or
after the names the other side needs), so it breaks when someone moves an import; and it means
two modules are one idea split in two. The graph here has an edge a -> b for every import
statement in module a (at module level, inside functions, under ``if TYPE_CHECKING``) that names
module b of the package, with relative imports resolved. ``from pkg import name`` is an edge to
``pkg.name`` where that is a module, else to ``pkg`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dropblock"


def module_name(path: Path, root: Path) -> str:
    """``dropblock.models.base`` for root/dropblock/models/base.py (a package: its __init__'s name)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root`` by its dotted name."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _base(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (``from ..x import y`` in a.b.c -> a.x)."""
    if not node.level:
        return node.module or ""
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the import statements of module ``name`` (at ``path``) name."""
    out = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, is_package, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
    return {m for m in out if m in known and m != name}


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports, for every module of ``package`` under ``root``."""
    mods = package_modules(root, package)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path a -> ... -> a) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, comp) for comp in components]


def _closed_path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth first)."""
    start, members = comp[0], set(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start] + path[::-1][1:] + [start] if v != start else [start, start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{comp} is not a cycle")  # pragma: no cover


def test_the_package_has_no_import_cycle() -> None:
    """Fails, naming each cycle as a -> b -> a, when any two modules of dropblock/ import each other,
    directly or through others (e.g. functional <-> ops, or sampling -> backends -> _triton -> sampling
    before they were split)."""
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_sees_relative_function_level_and_from_package_imports(tmp_path: Path) -> None:
    """The graph is not vacuous: a three-module cycle made of a function-level relative import, a
    ``from package import module`` and a ``from ..module import name`` is found and named; it fails
    if any of those three kinds of import were ignored."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from . import b\n",
        "pkg/b.py": "from pkg.sub import c\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..a import f\n",
        "pkg/d.py": "import pkg.a\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_an_acyclic_graph_passes_and_a_name_import_is_an_edge_to_its_module(tmp_path: Path) -> None:
    """``from pkg.a import name`` is an edge to pkg.a, not to a module ``pkg.a.name``; a chain is no cycle."""
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "X = 1\n", "pkg/b.py": "from pkg.a import X\n"})
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": set(), "pkg.a": set(), "pkg.b": {"pkg.a"}}
    assert cycles(graph) == []


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"a"}}, None),  # self-imports are dropped when the graph is built, never seen here
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}, ["a", "b", "c", "a"]),
])
def test_cycles_are_named_as_closed_paths(graph, cycle) -> None:
    """Each strongly connected component with more than one module is reported as one closed path."""
    assert cycles(graph) == ([cycle] if cycle else [])
