"""The project's import boundaries and the absence of import circles, checked on the source.

Layers (the backend runs in its own process with torch; the add-on runs in Blender's Python):

* ``backend/`` may use ``blender_piva.contract`` (the job/event/capture contract shared by both
  processes) and nothing else of the add-on;
* ``blender_piva/contract/`` imports only the standard library and itself, so the backend's Python
  can load it without numpy, bpy or the rest of the add-on;
* ``blender_piva/contract/`` and ``blender_piva/core/`` never import Blender's modules;
* nothing under ``blender_piva/`` imports torch (Blender's Python has none);
* no module pair of ``backend/`` or ``blender_piva/`` imports each other, directly or around a
  longer circle, at module level or inside a function.

Every ``.py`` file is parsed with :mod:`ast`, never imported: the tests run without torch, bpy or a
GPU and see function-level (lazy) and ``TYPE_CHECKING`` imports as well as top-level ones.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "blender_piva")
"""Top-level packages of the project whose modules the graph covers."""

BLENDER_MODULES = frozenset(
    {"bpy", "bmesh", "mathutils", "gpu", "gpu_extras", "bpy_extras", "bl_math", "blf", "aud", "idprop"}
)
"""Modules that exist only inside Blender's Python."""

CONTRACT = "blender_piva.contract"
BLENDER_FREE = ("blender_piva.contract", "blender_piva.core")
"""Packages of the add-on that must load without Blender."""


@dataclass(frozen=True)
class ImportEdge:
    """One imported name: ``importer`` (module) imports ``target`` at ``path:line``."""

    importer: str
    """Dotted name of the importing module."""
    target: str
    """Dotted name of the imported module (``from X import y`` gives ``X.y`` when that is a module)."""
    name: str
    """The imported name as written, relative imports resolved (``from X import y`` gives ``X.y``)."""
    path: Path
    """The importing file."""
    line: int
    """Line of the import statement."""

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: imports {self.name}"


def module_name(path: Path) -> str:
    """``backend/render/rays.py`` -> ``backend.render.rays``; a package's ``__init__`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def project_files() -> tuple[Path, ...]:
    return tuple(sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")))


@lru_cache(maxsize=None)
def project_modules() -> frozenset[str]:
    return frozenset(module_name(p) for p in project_files())


def _base_of(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` statement imports from (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module of the project (names of outside packages are never modules here)."""
    return name in project_modules()


@lru_cache(maxsize=None)
def imports_of(path: Path) -> tuple[ImportEdge, ...]:
    """Every import in ``path``, wherever it stands (module level, functions, TYPE_CHECKING)."""
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    edges: list[ImportEdge] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges += [ImportEdge(importer, alias.name, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base_of(node, importer, is_package)
            if base == "__future__":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if alias.name != "*" and _is_module(candidate) else base
                edges.append(ImportEdge(importer, target, candidate, path, node.lineno))
    return tuple(edges)


def files_under(package: str) -> list[Path]:
    folder = ROOT / Path(*package.split("."))
    single = folder.with_suffix(".py")
    return sorted(folder.rglob("*.py")) if folder.is_dir() else ([single] if single.is_file() else [])


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _report(title: str, edges: list[ImportEdge]) -> str:
    return title + ":\n" + "\n".join("  " + edge.where() for edge in edges)


# ---- boundaries -----------------------------------------------------------------------------------


def test_backend_uses_only_the_contract_of_the_add_on():
    bad = [
        edge
        for path in files_under("backend")
        for edge in imports_of(path)
        if _within(edge.target, "blender_piva") and not _within(edge.target, CONTRACT)
    ]
    assert not bad, _report(f"backend/ may import only {CONTRACT} (and its submodules) of blender_piva", bad)


@pytest.mark.parametrize("package", BLENDER_FREE)
def test_contract_and_core_never_import_blender(package: str):
    bad = [
        edge
        for path in files_under(package)
        for edge in imports_of(path)
        if edge.target.split(".")[0] in BLENDER_MODULES
    ]
    assert not bad, _report(f"{package} must run outside Blender, but imports Blender's modules", bad)


def test_contract_imports_only_the_standard_library_and_itself():
    files = files_under(CONTRACT)
    assert files, f"{CONTRACT} has no source files: the backend and the add-on share it"
    bad = [
        edge
        for path in files
        for edge in imports_of(path)
        if not _within(edge.target, CONTRACT) and edge.target.split(".")[0] not in sys.stdlib_module_names
    ]
    assert not bad, _report(f"{CONTRACT} may import only the standard library and {CONTRACT}.*", bad)


def test_the_add_on_never_imports_torch():
    bad = [
        edge for path in files_under("blender_piva") for edge in imports_of(path) if edge.target.split(".")[0] == "torch"
    ]
    assert not bad, _report("blender_piva/ runs in Blender's Python, which has no torch", bad)


# ---- circles --------------------------------------------------------------------------------------


def import_graph() -> dict[str, list[ImportEdge]]:
    """Project module -> its imports of other project modules (self-imports dropped)."""
    modules = project_modules()
    graph: dict[str, list[ImportEdge]] = {m: [] for m in modules}
    for path in project_files():
        for edge in imports_of(path):
            if edge.target in modules and edge.target != edge.importer:
                graph[edge.importer].append(edge)
    return graph


def strongly_connected_components(graph: dict[str, list[ImportEdge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep graphs); components sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted({e.target for e in graph[root]})))]
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
                    work.append((child, iter(sorted({e.target for e in graph[child]}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def test_circle_finder_finds_a_circle():
    """The checker itself: a -> b -> c -> a is one circle, d outside it."""

    def edge(a: str, b: str) -> ImportEdge:
        return ImportEdge(a, b, b, ROOT / "x.py", 1)

    graph = {"a": [edge("a", "b")], "b": [edge("b", "c")], "c": [edge("c", "a"), edge("c", "d")], "d": []}
    assert [c for c in strongly_connected_components(graph) if len(c) > 1] == [["a", "b", "c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circles(package: str):
    graph = import_graph()
    circles = [c for c in strongly_connected_components(graph) if len(c) > 1 and any(_within(m, package) for m in c)]
    messages = []
    for members in circles:
        inside = [e for m in members for e in graph[m] if e.target in members]
        messages.append(_report("circle of " + ", ".join(members), inside))
    assert not circles, f"{package}/ has import circles (lazy imports count too):\n" + "\n".join(messages)
