"""Smoke instances for canary checks: the model's own signature, typical values.

A canary's requests must be ones the serving container accepts — TF Serving's JSON rules
(``cascade.serving.request_rules``): each instance has exactly the signature's inputs,
the passthrough key included; no ``null``; integers for integer inputs. So the rows are
built from the signature (input names and dtypes: the model server's metadata route, or
the ``cascade_model.json`` manifest the trainer exports beside the SavedModel) and filled
with typical values from the run's transform spec (a numeric feature's mean, a
vocabulary's first value).

Every other row has every feature missing, written the way the exported model reads a
missing value (``cascade.trainer.preprocessing``): ``NaN`` for a float input (filled with
the feature's ``fill_value``), ``""`` for a string input (filled likewise) — so a
served model must answer both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cascade.core.job_spec import TrainingJobSpec
from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore
from cascade.serving import request_rules
from cascade.transform.spec import (
    HashTransform,
    NumericTransform,
    TransformSpec,
    VocabularyTransform,
)

__all__ = [
    "MODEL_MANIFEST",
    "fit_to_signature",
    "inputs_from_manifest",
    "inputs_from_metadata",
    "inputs_from_spec",
    "key_from_metadata",
    "read_transform_spec",
    "smoke_instances",
]

MODEL_MANIFEST = "cascade_model.json"
"""Written by ``cascade.trainer.export`` beside the SavedModel: inputs, key, outputs."""
SMOKE_KEY = "cascade-smoke"
_MANIFEST_DTYPES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int64": "DT_INT64"}
_MANIFEST_DTYPES |= {"int32": "DT_INT32", "string": "DT_STRING", "bool": "DT_BOOL"}


def read_transform_spec(artifacts: ArtifactStore, run_id: str) -> TransformSpec | None:
    """The transform spec ``run_id``'s model was trained with: the one its training job
    read (``job_spec.json``'s ``transform_spec_uri``: a follow-up or a retrain request's
    run has no transform of its own, and an upload's run may train on a later one), else
    the run's own transform."""
    job = artifacts.read_model(
        f"{RunPaths(run_id).step_dir('training')}/job_spec.json", TrainingJobSpec
    )
    prefix = artifacts.uri("")
    if job is not None and job[0].transform_spec_uri.startswith(prefix):
        trained_with = artifacts.read_model(
            job[0].transform_spec_uri.removeprefix(prefix), TransformSpec
        )
        if trained_with is not None:
            return trained_with[0]
    found = artifacts.read_model(
        f"{RunPaths(run_id).step_dir('transform')}/transform.json", TransformSpec
    )
    return None if found is None else found[0]


def inputs_from_spec(spec: TransformSpec) -> dict[str, str]:
    """The signature ``cascade.trainer.export`` writes for ``spec``: numeric features
    float32, the others string, and the passthrough key (string)."""
    inputs = {
        feature.name: "DT_FLOAT" if isinstance(feature, NumericTransform) else "DT_STRING"
        for feature in spec.features
    }
    return inputs | {spec.passthrough_key or "key": "DT_STRING"}


def inputs_from_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Input name → dtype from TF Serving's metadata answer (``GET .../metadata``)."""
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    return {str(name): str(spec["dtype"]) for name, spec in signature["inputs"].items()}


def inputs_from_manifest(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Input name → dtype from the exported model's ``cascade_model.json``."""
    inputs = {
        str(name): _MANIFEST_DTYPES.get(str(dtype), str(dtype))
        for name, dtype in manifest["inputs"].items()
    }
    return inputs | {str(manifest["key"]): "DT_STRING"}


def _typical(feature: NumericTransform | VocabularyTransform | HashTransform) -> Any:
    if isinstance(feature, NumericTransform):
        return feature.mean
    if isinstance(feature, VocabularyTransform):
        return feature.vocabulary[0] if feature.vocabulary else feature.fill_value
    return feature.fill_value or "cascade-smoke"


def _as_dtype(value: Any, dtype: str) -> Any:
    """``value`` as the JSON value the rules accept for ``dtype`` (a default if none)."""
    if dtype == "DT_STRING":
        return value if isinstance(value, str) else "" if value is None else str(value)
    if dtype == "DT_BOOL":
        return bool(value) if isinstance(value, bool | int | float) else False
    if "INT" in dtype:
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else 0
        return round(number) if math.isfinite(number) else 0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _missing(value: Any, dtype: str) -> Any:
    if dtype == "DT_STRING":
        return ""
    if dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF"):
        return math.nan
    return value  # an integer or bool input has no missing value: keep the typical one


def smoke_instances(
    spec: TransformSpec | None,
    count: int = 4,
    *,
    inputs: Mapping[str, str] | None = None,
    key: str | None = None,
) -> list[dict[str, Any]]:
    """``count`` instances for the signature ``inputs`` (default: the one exported for
    ``spec``), alternating typical values and all-missing values, each with its own
    ``key`` (default: the spec's passthrough key, else an input named ``key``). Every
    instance is valid under the request rules."""
    if inputs is None:
        if spec is None:
            return []
        inputs = inputs_from_spec(spec)
    features = {} if spec is None else {feature.name: feature for feature in spec.features}
    typical = {
        name: _as_dtype(_typical(features[name]) if name in features else None, dtype)
        for name, dtype in inputs.items()
    }
    missing = {name: _missing(value, inputs[name]) for name, value in typical.items()}
    rows = []
    for index in range(count):
        row = dict(typical if index % 2 == 0 else missing)
        row.update({name: f"{SMOKE_KEY}-{index}" for name in _keys(inputs, spec, key)})
        rows.append(row)
    request_rules.columns(rows, inputs)  # they must pass the server's rules
    return rows


def _keys(inputs: Mapping[str, str], spec: TransformSpec | None, key: str | None) -> list[str]:
    if key is None:
        key = "key" if spec is None else spec.passthrough_key or "key"
    return [key] if inputs.get(key) == "DT_STRING" else []


def key_from_metadata(metadata: Mapping[str, Any]) -> str | None:
    """The passthrough key: the one string input that is also an output."""
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    keys = [
        name
        for name, spec in signature["inputs"].items()
        if name in signature["outputs"] and spec["dtype"] == "DT_STRING"
    ]
    return str(keys[0]) if len(keys) == 1 else None


def fit_to_signature(
    instances: list[dict[str, Any]], inputs: Mapping[str, str], key: str | None
) -> list[dict[str, Any]]:
    """``instances`` (built from a transform spec) made to fit the signature the model
    actually serves: exactly its inputs, values of its dtypes, a key on every row. A
    feature the rows lack takes the dtype's default; with no rows, default rows."""
    if not instances:
        return smoke_instances(None, inputs=inputs, key=key)
    rows = []
    for index, instance in enumerate(instances):
        row = {name: _as_dtype(instance.get(name), dtype) for name, dtype in inputs.items()}
        if key is not None and key in inputs and not instance.get(key):
            row[key] = f"{SMOKE_KEY}-{index}"
        rows.append(row)
    request_rules.columns(rows, inputs)
    return rows
