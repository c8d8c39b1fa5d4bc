"""The predict request rules, written once and applied on every predict route.

They are TF Serving's JSON rules (``tensorflow_serving/util/json_tensor.cc``), which
Vertex AI's prebuilt TensorFlow container also applies, plus Vertex AI's request limit,
so a body this server accepts is one Google Cloud accepts too (never more lenient):

- the body is at most ``MAX_BODY_BYTES`` (Vertex AI: "Request payload size exceeds the
  limit: 1572864 bytes"), nested at most ``MAX_DEPTH`` deep, valid UTF-8 JSON;
- it is an object with ``"instances"`` (row format): a non-empty list of at most
  ``MAX_INSTANCES`` objects; ``"parameters"`` (Vertex AI) must be an object (its one
  key Cascade reads, ``"answer_from": "model"``, asks a static or hybrid dataset's
  version for its model's answers, not the store's: the deployer's smoke and canary
  checks and continued evaluation judge the model; any other value is refused) and
  ``"signature_name"`` (TF Serving) must name ``serving_default`` when given; the
  columnar ``"inputs"`` form is refused (the one client format is rows);
- each instance's keys equal the signature's inputs exactly: no missing input, no
  extra field — the passthrough key included;
- ``null`` is never a value. A missing value is written the way the model reads it:
  ``NaN`` for a float input, ``""`` for a string input;
- float inputs take JSON numbers (``NaN``, ``Infinity``, ``-Infinity`` included);
  integer inputs take integers only (``1.0`` is refused) within the dtype's range;
  string inputs take strings, or ``{"b64": "<base64>"}`` for bytes; bool inputs take
  ``true`` / ``false``; every input here is one value per instance (shape ``[batch]``).

Every violation is a ``RequestError`` (HTTP 400) whose message names the instance and
the field; the rules never raise anything else for any body.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cascade.core.json_body import depth_exceeds

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_INSTANCES",
    "RequestError",
    "columns",
    "parse_body",
]

MAX_BODY_BYTES = 1_572_864
"""1.5 MB: Vertex AI's limit on a prediction request (the same on every route here)."""
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects in a body (a row body needs 3)."""
MAX_INSTANCES = 10_000
SIGNATURE = "serving_default"
ANSWER_FROM = "answer_from"
MODEL = "model"
MODEL_ANSWERS = {ANSWER_FROM: MODEL}
"""The ``"parameters"`` that ask for the model's answers in every serving mode."""


def wants_model_answers(parameters: dict[str, Any]) -> bool:
    """Whether a parsed body's ``parameters`` ask for the model's answers."""
    return parameters.get(ANSWER_FROM) == MODEL


TOP_LEVEL_KEYS = frozenset({"instances", "parameters", "signature_name"})

_FLOATS = {"DT_FLOAT": 3.4028234663852886e38, "DT_DOUBLE": math.inf, "DT_HALF": 65504.0}
_INTS = {
    "DT_INT8": (-(2**7), 2**7 - 1),
    "DT_INT16": (-(2**15), 2**15 - 1),
    "DT_INT32": (-(2**31), 2**31 - 1),
    "DT_INT64": (-(2**63), 2**63 - 1),
    "DT_UINT8": (0, 2**8 - 1),
    "DT_UINT16": (0, 2**16 - 1),
    "DT_UINT32": (0, 2**32 - 1),
    "DT_UINT64": (0, 2**64 - 1),
}
_MISSING = {"float": "NaN", "string": '""'}


class RequestError(ValueError):
    """The body breaks a rule; HTTP 400. ``instance`` and ``field`` say where."""

    def __init__(self, message: str, *, instance: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.instance = instance
        self.field = field


@dataclass(frozen=True)
class Body:
    instances: list[Any]
    parameters: dict[str, Any]


def parse_body(data: bytes) -> Body:
    """The body's instances and parameters, after the body-level rules."""
    if len(data) > MAX_BODY_BYTES:
        raise RequestError(
            f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes "
            f"(this body has {len(data)})"
        )
    if depth_exceeds(data, MAX_DEPTH):
        raise RequestError(f"the body nests arrays/objects deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"the body is not valid JSON: {error}") from None
    if type(body) is not dict:
        raise RequestError('the body must be a JSON object {"instances": [...]}')
    if "inputs" in body:
        raise RequestError(
            'the columnar "inputs" form is not supported; send rows as "instances": '
            "[{input: value, ...}, ...]"
        )
    unknown = body.keys() - TOP_LEVEL_KEYS
    if unknown:
        raise RequestError(
            f"unknown top-level field {sorted(unknown)[0]!r}; the body takes "
            f"{', '.join(sorted(TOP_LEVEL_KEYS))}",
            field=sorted(unknown)[0],
        )
    if "instances" not in body:
        raise RequestError('the body must have "instances": [{input: value, ...}, ...]')
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise RequestError(
            f"signature_name must be {SIGNATURE!r}, not {signature!r}", field="signature_name"
        )
    parameters = body.get("parameters", {})
    if type(parameters) is not dict:
        raise RequestError('"parameters" must be a JSON object', field="parameters")
    answer_from = parameters.get(ANSWER_FROM, MODEL)
    if answer_from != MODEL:
        raise RequestError(
            f'"parameters.{ANSWER_FROM}" may only be "{MODEL}" (the model\'s answers, not '
            f"precomputed ones), not {_shown(answer_from)}",
            field=f"parameters.{ANSWER_FROM}",
        )
    instances = body["instances"]
    if type(instances) is not list or not instances:
        raise RequestError('"instances" must be a non-empty list of JSON objects')
    if len(instances) > MAX_INSTANCES:
        raise RequestError(f"at most {MAX_INSTANCES} instances per request")
    return Body(instances, parameters)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is int or type(value) is float:
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    return "an object"


def _bad(index: int, name: str, dtype: str, value: Any, expected: str) -> RequestError:
    hint = ""
    if value is None:
        kind = "string" if dtype == "DT_STRING" else "float" if dtype in _FLOATS else ""
        hint = (
            f"; null is not a value: write a missing value as {_MISSING[kind]}"
            if kind
            else "; null is not a value"
        )
    return RequestError(
        f"instance {index}: input {name!r} ({dtype}) must be {expected}, "
        f"got {_kind(value)} {_shown(value)}{hint}",
        instance=index,
        field=name,
    )


def _check_keys(instances: list[Any], names: frozenset[str]) -> None:
    for index, instance in enumerate(instances):
        if type(instance) is not dict:
            raise RequestError(
                f"instance {index} must be a JSON object {{input: value, ...}}, "
                f"not {_kind(instance)}",
                instance=index,
            )
        if instance.keys() == names:
            continue
        missing = names - instance.keys()
        if missing:
            name = sorted(missing)[0]
            raise RequestError(
                f"instance {index}: missing input {name!r}; every instance must have "
                f"exactly the signature's inputs: {', '.join(sorted(names))}",
                instance=index,
                field=name,
            )
        name = sorted(instance.keys() - names)[0]
        raise RequestError(
            f"instance {index}: unknown field {name!r}; the signature's inputs are "
            f"{', '.join(sorted(names))}",
            instance=index,
            field=name,
        )


def _column(instances: list[dict[str, Any]], name: str, dtype: str) -> list[Any]:
    values = [instance[name] for instance in instances]
    if dtype in _FLOATS:
        largest = _FLOATS[dtype]
        for index, value in enumerate(values):
            kind = type(value)
            if kind is not float and kind is not int:
                raise _bad(index, name, dtype, value, "a number (NaN for a missing value)")
            if abs(value) > largest and (kind is int or math.isfinite(value)):
                raise _bad(index, name, dtype, value, f"within ±{largest:g}")
        return values
    if dtype in _INTS:
        low, high = _INTS[dtype]
        for index, value in enumerate(values):
            if type(value) is not int:
                raise _bad(index, name, dtype, value, "an integer (1, not 1.0)")
            if not low <= value <= high:
                raise _bad(index, name, dtype, value, f"within [{low}, {high}]")
        return values
    if dtype == "DT_STRING":
        for index, value in enumerate(values):
            if type(value) is str:
                continue
            if type(value) is dict and value.keys() == {"b64"} and type(value["b64"]) is str:
                try:
                    values[index] = base64.b64decode(value["b64"], validate=True)
                except (binascii.Error, ValueError):
                    raise _bad(index, name, dtype, value, 'valid base64 in {"b64": ...}') from None
                continue
            raise _bad(index, name, dtype, value, 'a string or {"b64": "<base64>"}')
        return values
    if dtype == "DT_BOOL":
        for index, value in enumerate(values):
            if type(value) is not bool:
                raise _bad(index, name, dtype, value, "true or false")
        return values
    raise RequestError(f"input {name!r} has dtype {dtype}, which this server cannot feed")


def columns(instances: list[Any], inputs: Mapping[str, str]) -> dict[str, list[Any]]:
    """One list of checked values per input, from row-format ``instances``.

    ``inputs`` maps each input of the signature to its TensorFlow dtype name
    (``DT_FLOAT``, ``DT_STRING``, ...): the ``signature_def`` of the metadata route.
    Strings stay ``str`` and ``{"b64": ...}`` becomes ``bytes``.
    """
    _check_keys(instances, frozenset(inputs))
    return {name: _column(instances, name, dtype) for name, dtype in inputs.items()}
