"""What a deployable imports, read from the source, and which distributions provide it.

Used by tests/infra/test_function_packages.py. Two questions:

* Which modules can a function's entry point import? Its ``main.py`` is imported
  whole (module-level imports, followed through every ``cascade`` module they import),
  and the entry point itself can reach the ``cascade`` modules its body names, including
  the ones those import inside functions (a step picks its Vertex AI or local client
  that way). Imports under ``if TYPE_CHECKING:`` never run and are left out.
* Which distributions does an optional-dependency group install? Its requirements,
  followed through the installed distributions' metadata (``Requires-Dist`` with
  markers) in the running environment, which `make setup` installs from the lock.

Only the standard library and ``packaging`` (a dependency of pytest).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

__all__ = [
    "Imports",
    "ModuleImport",
    "SourceTree",
    "distribution_of",
    "entry_point_closure",
    "group_distributions",
    "group_requirements",
    "normalize",
]

LOCAL_PACKAGE = "cascade"
STDLIB = frozenset(sys.stdlib_module_names)


def normalize(distribution: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


@dataclass(frozen=True)
class ModuleImport:
    """``importer`` imports ``name`` (a dotted name as written), inside a function or not."""

    importer: str
    name: str
    deferred: bool


@dataclass(frozen=True)
class Imports:
    """What one module imports: at import time, and inside its functions."""

    module_level: tuple[ModuleImport, ...]
    deferred: tuple[ModuleImport, ...]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.is_package = is_package
        self.found: list[ModuleImport] = []
        self.depth = 0  # > 0 inside a function body
        self.bound: dict[str, str] = {}  # module-level name -> dotted name it was imported as

    def _add(self, name: str) -> None:
        self.found.append(ModuleImport(self.module, name, self.depth > 0))

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.module if self.is_package else self.module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)
            if self.depth == 0:
                self.bound[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._absolute(node)
        for alias in node.names:
            name = base if alias.name == "*" else f"{base}.{alias.name}"
            self._add(name)
            if self.depth == 0 and alias.name != "*":
                self.bound[alias.asname or alias.name] = name

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        self.depth += nested
        super().generic_visit(node)
        self.depth -= nested


@dataclass
class SourceTree:
    """The modules of the local package under ``source_root`` (e.g. ``shared/src``)."""

    source_root: Path
    _imports: dict[str, Imports] = field(default_factory=dict)

    def path_of(self, module: str) -> Path | None:
        base = self.source_root.joinpath(*module.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    def local_module(self, name: str) -> str | None:
        """The local module ``name`` (a dotted import) loads: itself or, for
        ``from package import attribute``, the nearest enclosing module."""
        parts = name.split(".")
        if parts[0] != LOCAL_PACKAGE:
            return None
        while parts:
            candidate = ".".join(parts)
            if self.path_of(candidate) is not None:
                return candidate
            parts.pop()
        return None

    def imports(self, module: str) -> Imports:
        if module not in self._imports:
            path = self.path_of(module)
            if path is None:
                raise KeyError(module)
            self._imports[module] = parse_imports(path, module)
        return self._imports[module]

    def with_parents(self, module: str) -> list[str]:
        """``a.b.c`` -> [a, a.b, a.b.c]: importing a module runs its packages first."""
        parts = module.split(".")
        return [".".join(parts[: i + 1]) for i in range(len(parts))]


def parse_imports(path: Path, module: str) -> Imports:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    visitor = _ImportVisitor(module, path.name == "__init__.py")
    visitor.visit(tree)
    return Imports(
        module_level=tuple(i for i in visitor.found if not i.deferred),
        deferred=tuple(i for i in visitor.found if i.deferred),
    )


@dataclass(frozen=True)
class Closure:
    """Local modules reached, and the external imports met on the way."""

    local_modules: frozenset[str]
    external: frozenset[ModuleImport]


def closure(tree: SourceTree, start: Iterable[ModuleImport], *, follow_deferred: bool) -> Closure:
    """Follow ``start`` through the local package: module-level imports always, imports
    inside functions only with ``follow_deferred``. External imports are collected, not
    followed; the standard library is left out."""
    local: set[str] = set()
    external: set[ModuleImport] = set()
    pending = list(start)
    while pending:
        item = pending.pop()
        module = tree.local_module(item.name)
        if module is None:
            if item.name.split(".")[0] not in STDLIB and item.name.split(".")[0] != "__future__":
                external.add(item)
            continue
        for reached in tree.with_parents(module):
            if reached in local:
                continue
            local.add(reached)
            imports = tree.imports(reached)
            pending.extend(imports.module_level)
            if follow_deferred:
                pending.extend(imports.deferred)
    return Closure(frozenset(local), frozenset(external))


def entry_point_closure(tree: SourceTree, main_py: Path, entry_point: str) -> Closure:
    """What serving ``entry_point`` of ``main_py`` can import.

    ``main.py`` is imported whole (its module-level imports, followed through module-level
    imports only). The entry point can then call into the local modules its body names,
    and those may import more inside their functions: those are followed completely.
    """
    main_imports = parse_imports(main_py, "main")
    at_import = closure(tree, main_imports.module_level, follow_deferred=False)

    module = ast.parse(main_py.read_text(encoding="utf-8"))
    visitor = _ImportVisitor("main", False)
    visitor.visit(module)
    function = next(
        (
            node
            for node in module.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point
        ),
        None,
    )
    if function is None:
        raise LookupError(f"{main_py} defines no function {entry_point}")
    used = {node.id for node in ast.walk(function) if isinstance(node, ast.Name)}
    reachable = [
        ModuleImport("main", visitor.bound[name], deferred=True)
        for name in sorted(used)
        if name in visitor.bound and tree.local_module(visitor.bound[name]) is not None
    ]
    at_run = closure(tree, [*reachable, *main_imports.deferred], follow_deferred=True)
    return Closure(
        at_import.local_modules | at_run.local_modules, at_import.external | at_run.external
    )


# ---------------------------------------------------------------------- distributions


@cache
def _file_owners() -> dict[str, str]:
    owners: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = normalize(distribution.metadata["Name"])
        for file in distribution.files or []:
            owners[os.path.realpath(distribution.locate_file(file))] = name
    return owners


@cache
def distribution_of(dotted: str) -> str | None:
    """The installed distribution that provides the module ``dotted`` loads: its longest
    importable prefix with a file (namespace packages such as ``google.cloud`` have
    none). None when nothing installed provides it."""
    parts = dotted.split(".")
    for length in range(1, len(parts) + 1):
        prefix = ".".join(parts[:length])
        try:
            spec = importlib.util.find_spec(prefix)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.origin and spec.origin not in ("built-in", "frozen"):
            return _file_owners().get(os.path.realpath(spec.origin))
    return None


def group_requirements(pyproject: Path, group: str, *, package: str = LOCAL_PACKAGE) -> list[str]:
    """The base dependencies plus ``group``'s, with ``package[...]`` self-references
    expanded (as pip does)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    groups: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()
    pending = [group]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for requirement in groups[current]:
            parsed = Requirement(requirement)
            if normalize(parsed.name) == package:
                pending.extend(parsed.extras)
            else:
                found.append(requirement)
    return found


def group_distributions(requirements: Iterable[str]) -> set[str]:
    """Every distribution that installing ``requirements`` brings in, by the metadata of
    the installed distributions (normalized names)."""
    environment = default_environment()
    found: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
            pending.append((normalize(requirement.name), frozenset(requirement.extras)))
    expanded: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in expanded:
            continue
        expanded.add((name, extras))
        found.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            wanted = any(
                requirement.marker is None
                or requirement.marker.evaluate({**environment, "extra": extra})
                for extra in ("", *extras)
            )
            if wanted:
                pending.append((normalize(requirement.name), frozenset(requirement.extras)))
    return found


def external_distributions(imports: Iterable[ModuleImport]) -> dict[str, set[ModuleImport]]:
    """External imports by the distribution that provides them (``?name`` when none)."""
    by_distribution: dict[str, set[ModuleImport]] = {}
    for item in imports:
        distribution = distribution_of(item.name) or f"?{item.name}"
        by_distribution.setdefault(distribution, set()).add(item)
    return by_distribution


def iter_sorted(items: Iterable[ModuleImport]) -> Iterator[str]:
    for item in sorted(items, key=lambda i: (i.importer, i.name)):
        yield f"{item.importer} imports {item.name}{' (in a function)' if item.deferred else ''}"
