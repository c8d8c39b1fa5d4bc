"""A small evaluator for the Terraform expressions the contract tests read.

Terraform cannot plan here (no provider), so the tests evaluate the few expressions whose
*values* matter to the code — the `delivery` rule of infra/locals.tf and the scheduler's
`base64encode(jsonencode({...}))` body — the way Terraform would. It knows: string
literals with `${...}` interpolation, numbers, true/false/null, attribute paths
(`each.value.tune`), `==` `!=` `&&` `||` `!`, `cond ? a : b`, parentheses, object
literals `{k = v, ...}`, and the functions `try`, `jsonencode`, `base64encode`. Anything
else raises, so an expression that grows beyond it fails the test instead of passing
unevaluated.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

__all__ = ["evaluate", "unwrap"]

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[?:(),{}=!\[\]])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*))"
)


class _MissingError(Exception):
    """An attribute path that does not resolve (what `try` catches)."""


def unwrap(value: str) -> str:
    """The expression inside a whole-string interpolation, as python-hcl2 gives it."""
    value = value.strip()
    if value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    return json.dumps(value)


def _read_string(text: str, start: int) -> tuple[list[str | tuple[str]], int]:
    """Parts of the string literal opening at ``text[start] == '"'``: literal text, or
    (expression,) for an interpolation; and the index after the closing quote."""
    parts: list[str | tuple[str]] = []
    i, literal = start + 1, ""
    while i < len(text):
        char = text[i]
        if char == "\\":
            literal += json.loads(f'"{text[i : i + 2]}"')
            i += 2
        elif char == '"':
            parts.append(literal)
            return parts, i + 1
        elif text.startswith("${", i):
            parts.append(literal)
            literal, depth, j = "", 1, i + 2
            while depth:
                if text[j] == '"':
                    _, j = _read_string(text, j)
                    continue
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            parts.append((text[i + 2 : j - 1],))
            i = j
        else:
            literal += char
            i += 1
    raise ValueError(f"unterminated string in {text!r}")


def _tokens(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] == '"':
            parts, i = _read_string(text, i)
            tokens.append(("string", parts))
            continue
        match = _TOKEN.match(text, i)
        if match is None or match.end() == i:
            raise ValueError(f"cannot read {text[i:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        i = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, scope: dict[str, Any]) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.scope = scope

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, op: str | None = None) -> tuple[str, Any]:
        token = self.peek()
        if token is None or (op is not None and token != ("op", op)):
            raise ValueError(f"expected {op!r} at {token!r}")
        self.at += 1
        return token

    def accept(self, op: str) -> bool:
        if self.peek() == ("op", op):
            self.at += 1
            return True
        return False

    def expression(self) -> Any:
        condition = self.disjunction()
        if self.accept("?"):
            then = self.expression()
            self.take(":")
            otherwise = self.expression()
            return then if condition else otherwise
        return condition

    def disjunction(self) -> Any:
        value = self.conjunction()
        while self.accept("||"):
            right = self.conjunction()
            value = bool(value) or bool(right)
        return value

    def conjunction(self) -> Any:
        value = self.comparison()
        while self.accept("&&"):
            right = self.comparison()
            value = bool(value) and bool(right)
        return value

    def comparison(self) -> Any:
        value = self.unary()
        if self.accept("=="):
            return value == self.unary()
        if self.accept("!="):
            return value != self.unary()
        return value

    def unary(self) -> Any:
        if self.accept("!"):
            return not self.unary()
        return self.primary()

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "string":
            return "".join(
                part if isinstance(part, str) else str(evaluate(part[0], self.scope))
                for part in value
            )
        if kind == "number":
            return float(value) if "." in value else int(value)
        if (kind, value) == ("op", "("):
            inner = self.expression()
            self.take(")")
            return inner
        if (kind, value) == ("op", "{"):
            return self.object()
        if kind == "name":
            if value in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[value]
            if self.peek() == ("op", "("):
                return self.call(value)
            return self.path(value)
        raise ValueError(f"unexpected {value!r}")

    def object(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while not self.accept("}"):
            kind, key = self.take()
            if kind == "string":
                key = "".join(p for p in key if isinstance(p, str))
            self.take("=")
            result[key] = self.expression()
            self.accept(",")
        return result

    def call(self, function: str) -> Any:
        self.take("(")
        if function == "try":
            start = self.at
            try:
                value = self.expression()
            except _MissingError:
                self.at = start
                self._skip_argument()
                self.take(",")
                value = self.expression()
            else:
                if self.accept(","):
                    self.expression()
            self.take(")")
            return value
        argument = self.expression()
        self.take(")")
        if function == "jsonencode":
            # Terraform's jsonencode: compact, object keys in lexical order.
            return json.dumps(argument, separators=(",", ":"), sort_keys=True)
        if function == "base64encode":
            return base64.b64encode(str(argument).encode()).decode()
        raise ValueError(f"function {function}() is not known to this evaluator")

    def _skip_argument(self) -> None:
        depth = 0
        while True:
            token = self.peek()
            if token is None:
                raise ValueError("unbalanced try()")
            if token[0] == "op" and token[1] in "({[":
                depth += 1
            elif token[0] == "op" and token[1] in ")}]":
                if depth == 0:
                    return
                depth -= 1
            elif token == ("op", ",") and depth == 0:
                return
            self.at += 1

    def path(self, dotted: str) -> Any:
        head, *rest = dotted.split(".")
        if head not in self.scope:
            raise ValueError(f"{head!r} is not in scope")
        value = self.scope[head]
        for part in rest:
            if not isinstance(value, dict) or part not in value:
                raise _MissingError(dotted)
            value = value[part]
        return value


def evaluate(expression: str, scope: dict[str, Any]) -> Any:
    """The value of a Terraform ``expression`` (without ``${ }``) in ``scope``."""
    parser = _Parser(expression, scope)
    value = parser.expression()
    if parser.peek() is not None:
        raise ValueError(f"trailing {parser.peek()!r} in {expression!r}")
    return value
