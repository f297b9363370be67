"""No import cycles among the project's modules (app/, xnet_core/, explain/).

Every import statement counts, wherever it is: at the top, inside a function (a lazy import still
ties the two modules together, it only hides the cycle until that function runs) and under
``if TYPE_CHECKING:`` (a type checker follows it, and it is one edit away from a runtime import).

What is an edge. ``import a.b`` and ``from a import b`` (``b`` a submodule) depend on ``a.b``.
Python also runs the package ``a/__init__.py`` first, so the importer depends on ``a`` too, except
when the importer lies inside ``a``: ``a`` is then already running or done, which is the normal
package pattern (``a/__init__`` imports ``a.b``, and ``a.b`` imports its sibling ``a.c``). Leaving
the parent out everywhere would hide a real cycle such as ``m -> a.b`` with ``a/__init__ -> m``;
``test_cycle_through_a_package_init_is_found`` pins that case. ``from a import name`` (``name`` not
a submodule) depends on ``a`` itself, so a submodule that reads a name from its own package's
``__init__`` while that ``__init__`` imports it is a cycle, as it is at runtime.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "xnet_core", "explain")

Graph = Mapping[str, set[str]]

def project_modules(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of the project packages by dotted name (a package by its own name)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def _imported_names(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules named by every import in ``tree`` (nested ones included)."""
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(_longest_known_prefix(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(node, module, is_package)
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                targets.add(candidate if candidate in known else _longest_known_prefix(base, known))
    targets.discard("")
    return targets


def _absolute_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = _package_of(module, is_package).split(".")
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _longest_known_prefix(name: str, known: set[str]) -> str:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return ""


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it depends on, by the rule in the module docstring."""
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own = set(_ancestors(module)) | ({module} if is_package else set())
        edges: set[str] = set()
        for target in _imported_names(ast.parse(path.read_text(), str(path)), module, is_package, known):
            edges.add(target)
            edges.update(a for a in _ancestors(target) if a in known and a not in own)
        edges.discard(module)
        graph[module] = edges
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one module, each sorted (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = _pop_component(stack, on_stack, node)
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components)


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> list[str]:
    component = []
    while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == root:
            return component


def shortest_cycle(graph: Graph, start: str) -> list[str]:
    """The shortest path start -> ... -> start (breadth first), or [] when there is none."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return []


def describe_cycles(graph: Graph) -> list[str]:
    """One line per component: its modules and one concrete cycle through them."""
    lines = []
    for component in strongly_connected(graph):
        cycle = shortest_cycle({m: graph[m] & set(component) for m in component}, component[0])
        lines.append(f"{', '.join(component)}: {' -> '.join(cycle)}")
    return lines


def test_no_import_cycles() -> None:
    graph = import_graph(project_modules())
    lines = describe_cycles(graph)
    assert not lines, "import cycles among the project's modules:\n" + "\n".join(lines)


def test_cycle_finder_finds_a_synthetic_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert shortest_cycle(graph, "a") == ["a", "b", "c", "a"]
    assert describe_cycles(graph) == ["a, b, c: a -> b -> c -> a"]
    assert describe_cycles({**graph, "c": {"d"}}) == []


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project_modules(root, ["pkg"])


def test_package_init_importing_its_submodules_is_no_cycle(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.b import B\nfrom . import c\n",
        "pkg/b.py": "import pkg.c\nfrom pkg import c as again\n",
        "pkg/c.py": "X = 1\n",
    })
    graph = import_graph(modules)
    assert graph == {"pkg": {"pkg.b", "pkg.c"}, "pkg.b": {"pkg.c"}, "pkg.c": set()}
    assert describe_cycles(graph) == []


def test_lazy_type_checking_and_relative_imports_count(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
        "pkg/b.py": "def f():\n    from .c import g\n",
        "pkg/c.py": "try:\n    from . import a\nexcept ImportError:\n    pass\n",
    })
    assert describe_cycles(import_graph(modules)) == ["pkg.a, pkg.b, pkg.c: pkg.a -> pkg.b -> pkg.c -> pkg.a"]


def test_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    # Importing pkg.m runs pkg.sub's __init__, which imports pkg.m back: a cycle though m names only pkg.sub.x.
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/m.py": "import pkg.sub.x\n",
        "pkg/sub/__init__.py": "from pkg.m import thing\n",
        "pkg/sub/x.py": "",
    })
    assert describe_cycles(import_graph(modules)) == ["pkg.m, pkg.sub: pkg.m -> pkg.sub -> pkg.m"]


def test_a_submodule_reading_a_name_from_its_own_package_init_is_a_cycle(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.b import B\nVERSION = 1\n",
        "pkg/b.py": "from pkg import VERSION\n",
    })
    assert describe_cycles(import_graph(modules)) == ["pkg, pkg.b: pkg -> pkg.b -> pkg"]
