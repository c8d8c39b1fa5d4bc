"""Terraform evaluates the values of infra/*.tf, without a provider.

Terraform cannot plan infra/ here (no google provider download), so
tests/infra/test_infra_terraform.py reads the HCL as text. Text says which names an
expression mentions, not what it evaluates to. This module makes Terraform itself compute
the values: it writes a provider-less copy of the configuration in which

* every variable is declared exactly as infra/variables.tf declares it (validations too);
* every local that the evaluated expressions need is copied as written;
* every ``google_*`` resource and data source they reference is replaced by a *stub*: a
  local with the same ``for_each`` keys whose attributes are symbolic strings, e.g.
  ``google_pubsub_topic.this["dead-letter"].id`` reads ``google_pubsub_topic.this[dead-letter].id``
  (see ``ref``), so a test can say which resource a value points at;
* each evaluated resource becomes a ``terraform_data`` with the same ``for_each`` (or
  ``count``) whose ``input`` is the resource's body, blocks as lists of objects and
  ``dynamic`` blocks as ``for`` expressions over their ``for_each``;

then runs ``terraform apply`` (builtin provider only) and returns every value as JSON.
Meta-arguments (``depends_on``, ``lifecycle``, ``provider``) and heredocs (scripts,
documentation) are left out. A construct this cannot copy makes Terraform fail, and so
the test, rather than pass unevaluated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest

__all__ = [
    "EvaluatedInfra",
    "InfraConfig",
    "TerraformError",
    "evaluate_infra",
    "load_infra",
    "ref",
]

_OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)
# Block arguments that say how Terraform manages a resource, not what it creates.
_META = {"for_each", "count", "depends_on", "lifecycle", "provider", "connection"}
# Attributes a stub resource offers (each a symbolic string, see ``ref``).
_STUB_ATTRIBUTES = (
    "id",
    "name",
    "email",
    "member",
    "number",
    "location",
    "writer_identity",
    "uri",
    "repository_id",
    "dataset_id",
)
# Nested blocks of a stub: `service_config[0].uri`, `event_trigger[0].trigger`.
_STUB_BLOCKS = {"service_config": ("uri", "service"), "event_trigger": ("trigger",)}

# A reference to a managed resource or a data source: `google_x.name`, `data.google_x.name`.
_REFERENCE = re.compile(
    r"(?<![\w.\-])(?P<data>data\.)?(?P<type>google_[a-z0-9_]+|terraform_data)\.(?P<name>[A-Za-z_][\w\-]*)"
)
_LOCAL = re.compile(r"(?<![\w.\-])local\.(?P<name>[A-Za-z_][\w\-]*)")


class TerraformError(AssertionError):
    """Terraform refused the configuration (or a variable value)."""


def ref(address: str, attribute: str, key: str | None = None) -> str:
    """The value a stub resource gives ``address[key].attribute``, e.g.
    ``ref("google_pubsub_topic.this", "id", "alerts")``."""
    where = address if key is None else f"{address}[{key}]"
    return f"{where}.{attribute}"


@dataclass
class InfraConfig:
    """infra/*.tf, parsed: resources and data sources by address, locals by name."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables_text: str = ""

    def resources_of(self, predicate: Any) -> list[str]:
        """Addresses (``type.name``) of the resources whose type satisfies ``predicate``."""
        return [address for address in self.resources if predicate(address.split(".")[0])]


def load_infra(infra_dir: Path) -> InfraConfig:
    config = InfraConfig()
    for path in sorted(infra_dir.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            document: dict[str, Any] = hcl2.load(handle, serialization_options=_OPTIONS)
        for kind, target in (("resource", config.resources), ("data", config.data)):
            for block in document.get(kind, []):
                for resource_type, named in block.items():
                    for name, body in named.items():
                        target[f"{resource_type}.{name}"] = body
        for block in document.get("locals", []):
            config.locals.update(block)
        for block in document.get("variable", []):
            config.variables.update(block)
        if document.get("variable"):
            if set(document) != {"variable"}:
                raise ValueError(f"{path.name}: variables share the file with {sorted(document)}")
            config.variables_text += path.read_text(encoding="utf-8") + "\n"
    return config


# ------------------------------------------------------------------ HCL text


def _skip_string(text: str, start: int) -> int:
    """Index after the quoted string that opens at ``text[start] == '"'``."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        elif text.startswith(("$${", "%%{"), i):
            i += 3
        elif text.startswith(("${", "%{"), i):
            i = _skip_template(text, i + 2)
        else:
            i += 1
    raise ValueError(f"unterminated string in {text!r}")


def _skip_template(text: str, start: int) -> int:
    """Index after the ``}`` that closes the interpolation whose body starts at ``start``."""
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _skip_string(text, i)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced interpolation in {text!r}")


class _Writer:
    """Writes parsed HCL values back as HCL expressions, rewriting references."""

    def __init__(self, stubs: set[tuple[bool, str, str]], iterators: Mapping[str, str]) -> None:
        self.stubs = stubs
        self.iterators = dict(iterators)

    def expression(self, text: str) -> str:
        def stub(match: re.Match[str]) -> str:
            key = (bool(match["data"]), match["type"], match["name"])
            self.stubs.add(key)
            return f"local.{_stub_local(*key)}"

        text = _REFERENCE.sub(stub, text)
        for iterator, replacement in self.iterators.items():
            text = re.sub(rf"(?<![\w.\-]){iterator}\.(key|value)\b", rf"{replacement}_\1", text)
        return text

    def string(self, value: str) -> str:
        """A quoted template: hcl2 gives literal parts unescaped, interpolations as written."""
        out, i = ['"'], 0
        while i < len(value):
            if value.startswith(("$${", "%%{"), i):
                out.append(value[i : i + 3])
                i += 3
            elif value.startswith(("${", "%{"), i):
                end = _skip_template(value, i + 2)
                out.append(value[i : i + 2] + self.expression(value[i + 2 : end - 1]) + "}")
                i = end
            else:
                out.append(json.dumps(value[i])[1:-1])
                i += 1
        out.append('"')
        return "".join(out)

    def value(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "null"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, list):
            return "[" + ", ".join(self.value(item) for item in value) + "]"
        if isinstance(value, dict):
            return self.body(value)
        raise TypeError(f"cannot write {value!r}")

    def body(self, body: Mapping[str, Any]) -> str:
        """An object expression of a block's (or an object's) attributes and blocks."""
        items: list[str] = []
        for key, item in body.items():
            if key in _META or key == "dynamic":
                continue
            if isinstance(item, str) and item.startswith("<<"):
                continue  # heredoc: a script or documentation, no value a test compares
            items.append(f"{json.dumps(key.strip(chr(34)))} = {self.value(item)}")
        for block in body.get("dynamic", []):
            for name, dynamic in block.items():
                if name in body:
                    raise ValueError(f"block {name} is both static and dynamic")
                items.append(f"{json.dumps(name)} = {self.dynamic(name, dynamic)}")
        return "{\n" + "\n".join(items) + "\n}"

    def dynamic(self, name: str, dynamic: Mapping[str, Any]) -> str:
        iterator = str(dynamic.get("iterator", name))
        loop = f"dyn_{iterator}"
        for_each = self.expression(_unwrap(dynamic["for_each"]))
        inner = _Writer(self.stubs, {**self.iterators, iterator: loop})
        (content,) = dynamic["content"]
        return f"[for {loop}_key, {loop}_value in {for_each} : {inner.body(content)}]"


def _unwrap(value: Any) -> str:
    """The expression of a meta-argument such as ``for_each = local.functions``."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    raise ValueError(f"not a single expression: {value!r}")


def _stub_local(data: bool, resource_type: str, name: str) -> str:
    return f"stub_{'data_' if data else ''}_{resource_type}__{name}"


def _stub_object(address: str, key: str | None) -> str:
    where = address if key is None else address + "[${" + key + "}]"
    items = [f'{attribute} = "{where}.{attribute}"' for attribute in _STUB_ATTRIBUTES]
    for block, attributes in _STUB_BLOCKS.items():
        inner = ", ".join(f'{a} = "{where}.{block}.{a}"' for a in attributes)
        items.append(f"{block} = [{{{inner}}}]")
    return "{" + ", ".join(items) + "}"


# ------------------------------------------------------------------ the copy


@dataclass(frozen=True)
class EvaluatedInfra:
    """Values as Terraform computed them: ``resources[address][key]`` is the body of one
    instance (key ``""`` without for_each/count), ``locals[name]`` a local's value."""

    resources: dict[str, dict[str, Any]]
    locals: dict[str, Any]

    def instances(self, address: str) -> dict[str, Any]:
        return self.resources[address]


def _main_tf(
    config: InfraConfig, addresses: Iterable[str], local_names: Iterable[str]
) -> tuple[str, list[str]]:
    stubs: set[tuple[bool, str, str]] = set()
    writer = _Writer(stubs, {})
    blocks: list[str] = []
    outputs: list[str] = []
    evaluated = list(addresses)
    for address in evaluated:
        body = config.resources[address]
        label = address.replace(".", "__")
        meta = ""
        if "for_each" in body:
            meta = f"for_each = {writer.expression(_unwrap(body['for_each']))}\n"
            value = f"{{for key, instance in terraform_data.{label} : key => instance.output}}"
        elif "count" in body:
            meta = f"count = {writer.value(body['count'])}\n"
            value = f"{{for index, instance in terraform_data.{label} : index => instance.output}}"
        else:
            value = f'{{"" = terraform_data.{label}.output}}'
        blocks.append(
            f'resource "terraform_data" "{label}" {{\n{meta}input = {writer.body(body)}\n}}'
        )
        outputs.append(f'output "resource__{label}" {{\n  value = {value}\n}}')
    outputs += [f'output "local__{name}" {{\n  value = local.{name}\n}}' for name in local_names]

    # The locals and stubs those expressions need, and theirs, to a fixed point.
    needed: dict[str, str] = {}
    pending = [*blocks, *outputs]
    done_stubs: set[tuple[bool, str, str]] = set()
    while pending:
        text = pending.pop()
        for match in _LOCAL.finditer(text):
            name = match["name"]
            if name in needed or name.startswith("stub_"):
                continue
            if name not in config.locals:
                raise KeyError(f"local.{name} is not defined in infra/")
            needed[name] = writer.value(config.locals[name])
            pending.append(needed[name])
        for stub in sorted(stubs - done_stubs):
            done_stubs.add(stub)
            data, resource_type, name = stub
            address = f"{'data.' if data else ''}{resource_type}.{name}"
            source = (config.data if data else config.resources).get(f"{resource_type}.{name}")
            if source is None:
                raise KeyError(f"{address} is not defined in infra/")
            if "for_each" in source:
                for_each = writer.expression(_unwrap(source["for_each"]))
                instance = _stub_object(address, "stub_key")
                stub_value = f"{{for stub_key, _ in {for_each} : stub_key => {instance}}}"
            elif "count" in source:
                count = writer.value(source["count"])
                stub_value = (
                    f"[for stub_key in range({count}) : {_stub_object(address, 'stub_key')}]"
                )
            else:
                stub_value = _stub_object(address, None)
            needed[_stub_local(*stub)] = stub_value
            pending.append(stub_value)
    local_block = "locals {\n" + "\n".join(f"{k} = {v}" for k, v in needed.items()) + "\n}"
    return "\n\n".join([local_block, *blocks, *outputs]) + "\n", evaluated


def _run(terraform: str, workdir: Path, *command: str, timeout: int = 120) -> str:
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    done = subprocess.run(
        [terraform, f"-chdir={workdir}", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise TerraformError(f"terraform {' '.join(command)}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _terraform() -> str:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    return terraform


def evaluate_infra(
    workdir: Path,
    config: InfraConfig,
    variables: Mapping[str, Any],
    *,
    addresses: Iterable[str],
    local_names: Iterable[str] = (),
) -> EvaluatedInfra:
    """Apply the provider-less copy of ``addresses`` (and ``local_names``) in ``workdir``."""
    terraform = _terraform()
    local_names = list(local_names)
    main, evaluated = _main_tf(config, addresses, local_names)
    (workdir / "variables.tf").write_text(config.variables_text, encoding="utf-8")
    (workdir / "main.tf").write_text(main, encoding="utf-8")
    (workdir / "terraform.tfvars.json").write_text(json.dumps(variables), encoding="utf-8")
    _run(terraform, workdir, "init", "-input=false", "-backend=false")
    _run(terraform, workdir, "apply", "-auto-approve", "-input=false", "-lock=false")
    shown = json.loads(_run(terraform, workdir, "output", "-json"))
    values = {name: entry["value"] for name, entry in shown.items()}
    return EvaluatedInfra(
        resources={
            address: values[f"resource__{address.replace('.', '__')}"] or {}
            for address in evaluated
        },
        locals={name: values[f"local__{name}"] for name in local_names},
    )


def plan_refuses(workdir: Path, variables: Mapping[str, Any]) -> str:
    """Plan the copy already written to ``workdir`` with other ``variables``; the error
    text when Terraform refuses them, "" when it accepts them."""
    terraform = _terraform()
    path = workdir / "other.tfvars.json"
    path.write_text(json.dumps(variables), encoding="utf-8")
    try:
        _run(terraform, workdir, "plan", "-input=false", "-lock=false", f"-var-file={path.name}")
    except TerraformError as error:
        return str(error)
    return ""


def iter_grants(evaluated: EvaluatedInfra) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(address, key, body) of every evaluated IAM member/binding instance."""
    for address, instances in evaluated.resources.items():
        if address.split(".")[0].endswith(("_iam_member", "_iam_binding", "_iam_policy")):
            for key, body in instances.items():
                yield address, key, body
