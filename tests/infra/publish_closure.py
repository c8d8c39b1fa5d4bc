"""Which topics a function's code can publish to, read from the source.

Used by tests/infra/test_topology_grants.py to hold the topology's ``publish`` grants to
what the code does. A function's entry point (in its ``main.py``) is followed through the
``cascade`` package at the granularity of top-level definitions: a function or class is
reached when reached code names it (directly, through an import, or as an attribute of
an imported module); a class brings all its methods; a module's own top-level statements
run when it is imported. Reached code that *constructs* a ``StepMessage`` subclass of
``cascade.core.messages`` by calling it (``Alert(...)``) can publish on that class's
``TOPIC``; code that names ``MESSAGE_TYPES`` (decoding any type by name, to republish it)
can publish on every topic. Decoding the message a function received
(``TrainRequest.model_validate(body)``, ``decode_message``) is not publishing it.

It over-approximates (a reached class brings every method), never under-approximates a
call made by name: a topic the code can publish on is always found. Only the standard
library.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra.import_closure import SourceTree

__all__ = ["MODULE_BODY", "Node", "PublishAnalysis", "reached_constructions"]

MODULE_BODY = "<module>"
MESSAGES_MODULE = "cascade.core.messages"
ALL_MESSAGES = "MESSAGE_TYPES"

Node = tuple[str, str]  # (module, top-level name or MODULE_BODY)


@dataclass
class _Module:
    name: str
    definitions: dict[str, ast.stmt]  # top-level def/class by name
    body: list[ast.stmt]  # other top-level statements
    bindings: dict[str, str]  # name -> dotted import target (any depth: over-approximate)
    imported: list[str]  # every dotted import, for module bodies run at import


def _parse(path: Path, module: str, is_package: bool) -> _Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    definitions: dict[str, ast.stmt] = {}
    body: list[ast.stmt] = []
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions[statement.name] = statement
        else:
            body.append(statement)
    bindings: dict[str, str] = {}
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported.append(alias.name)
                if alias.asname:
                    bindings[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    bindings.setdefault(root, root)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            imported.append(base)
            for alias in node.names:
                if alias.name != "*":
                    bindings[alias.asname or alias.name] = f"{base}.{alias.name}"
    return _Module(module, definitions, body, bindings, imported)


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; None when the chain does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


@dataclass
class PublishAnalysis:
    """Reachability over ``tree`` (the ``cascade`` sources) from functions' entry points."""

    tree: SourceTree
    messages: dict[str, str]  # StepMessage subclass name -> topic
    republished: frozenset[str] | None = None
    """The topics of MESSAGE_TYPES (what code naming it may publish); None: every topic."""
    _modules: dict[str, _Module] = field(default_factory=dict)

    def _module(self, name: str) -> _Module | None:
        if name not in self._modules:
            path = self.tree.path_of(name)
            if path is None:
                return None
            self._modules[name] = _parse(path, name, path.name == "__init__.py")
        return self._modules[name]

    def _resolve(self, dotted: str) -> Node | None:
        """The node a dotted name (``cascade.x.y.attr``) refers to, following re-exports."""
        for _ in range(20):  # re-export chains are short
            if not dotted.startswith("cascade"):
                return None
            if self.tree.path_of(dotted) is not None:
                return (dotted, MODULE_BODY)
            module_name, _, attribute = dotted.rpartition(".")
            module = self._module(module_name)
            if module is None:
                module_name = self.tree.local_module(module_name) or ""
                return (module_name, MODULE_BODY) if module_name else None
            if attribute in module.definitions:
                return (module_name, attribute)
            if attribute in module.bindings:
                dotted = module.bindings[attribute]
                continue
            return (module_name, MODULE_BODY)  # a module-level constant
        return None

    def _references(self, module: _Module, statements: Iterable[ast.AST]) -> set[Node]:
        found: set[Node] = set()
        for statement in statements:
            for node in ast.walk(statement):
                chain: list[str] | None = None
                if isinstance(node, ast.Attribute):
                    chain = _dotted(node)
                elif isinstance(node, ast.Name):
                    chain = [node.id]
                if not chain:
                    continue
                head = chain[0]
                if head in module.definitions:
                    found.add((module.name, head))
                elif head in module.bindings:
                    target = module.bindings[head]
                    # Follow attributes of a module: cascade.x (module) . y
                    for depth in range(len(chain), 0, -1):
                        candidate = ".".join([target, *chain[1:depth]])
                        resolved = self._resolve(candidate)
                        if resolved is not None:
                            found.add(resolved)
                            break
        return found

    def _constructed(self, module: _Module, statements: Iterable[ast.AST]) -> set[str]:
        """Topics of the messages these statements construct (or all, for MESSAGE_TYPES)."""
        topics: set[str] = set()
        for statement in statements:
            for node in ast.walk(statement):
                if (
                    isinstance(node, ast.Name)
                    and module.name != MESSAGES_MODULE
                    and self._is_message(module, node.id, ALL_MESSAGES)
                ):
                    topics.update(
                        self.messages.values() if self.republished is None else self.republished
                    )
                if not isinstance(node, ast.Call):
                    continue
                function = node.func
                if isinstance(function, ast.Name):
                    for message, topic in self.messages.items():
                        if self._is_message(module, function.id, message):
                            topics.add(topic)
        return topics

    def _is_message(self, module: _Module, name: str, message: str) -> bool:
        if module.name == MESSAGES_MODULE:
            return name == message
        return module.bindings.get(name) == f"{MESSAGES_MODULE}.{message}"

    def _statements(self, node: Node) -> tuple[_Module, list[ast.stmt]] | None:
        module = self._module(node[0])
        if module is None:
            return None
        if node[1] == MODULE_BODY:
            return module, module.body
        return module, [module.definitions[node[1]]]

    def topics_of(self, main_py: Path, entry_point: str) -> dict[str, set[Node]]:
        """topic -> the reached definitions that construct its message."""
        main = _parse(main_py, "main", False)
        if entry_point not in main.definitions:
            raise LookupError(f"{main_py} defines no function {entry_point}")
        self._modules["main"] = main
        try:
            return self._walk([("main", MODULE_BODY), ("main", entry_point)])
        finally:
            del self._modules["main"]

    def topics_of_function(self, module: str, function: str) -> dict[str, set[Node]]:
        """topic -> constructing definitions, from ``module.function`` (e.g. a trainer's
        ``cascade.trainer.task.main``), its module imported first."""
        return self._walk([(module, MODULE_BODY), (module, function)])

    def _walk(self, start: list[Node]) -> dict[str, set[Node]]:
        seen: set[Node] = set()
        pending = list(start)
        by_topic: dict[str, set[Node]] = {}
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            found = self._statements(node)
            if found is None:
                continue
            module, statements = found
            if node[0] != "main" or node[1] != MODULE_BODY:
                for topic in self._constructed(module, statements):
                    by_topic.setdefault(topic, set()).add(node)
            pending.extend(self._references(module, statements))
            if node[1] != MODULE_BODY:
                pending.append((node[0], MODULE_BODY))
            else:  # importing a module runs the bodies of what it imports
                for dotted in module.imported:
                    local = self.tree.local_module(dotted)
                    if local is not None:
                        pending.extend((parent, MODULE_BODY) for parent in _parents(local))
        return by_topic


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def reached_constructions(
    source_root: Path, main_py: Path, entry_point: str, messages: dict[str, str]
) -> dict[str, set[Node]]:
    """topic -> reached definitions constructing its message, for one entry point."""
    return PublishAnalysis(SourceTree(source_root), messages).topics_of(main_py, entry_point)
