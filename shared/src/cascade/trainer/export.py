"""The serving SavedModel: raw feature values in, predictions (and the key) out.

Signatures:

- ``serving_default``: every raw feature (``float32`` numeric, ``string`` categorical,
  each of shape ``[batch]``; NaN / ``""`` for missing) plus the key input (named after
  ``spec.passthrough_key``, else ``key``), returned unchanged under the same name;
- ``serving_features``: the same without the key, for callers that have none.

Outputs by problem type: binary and multiclass → ``probabilities`` ``[batch, classes]``,
``class_ids`` (int64) and ``classes`` (the class names); regression → ``predictions``
``[batch]``. Next to ``saved_model.pb`` the export writes ``cascade_model.json``
(``ServingManifest``), which says the same for model servers and the probe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import keras
import tensorflow as tf
from pydantic import BaseModel, ConfigDict

from cascade.core.errors import InvalidConfigError
from cascade.trainer.model import class_names
from cascade.trainer.preprocessing import feature_input_dtype
from cascade.transform.spec import LabelSpec, TransformSpec

__all__ = [
    "MANIFEST_NAME",
    "SIGNATURE_WITHOUT_KEY",
    "SIGNATURE_WITH_KEY",
    "ServingManifest",
    "export_serving_model",
    "key_name",
    "serving_outputs",
]

SIGNATURE_WITH_KEY = "serving_default"
SIGNATURE_WITHOUT_KEY = "serving_features"
MANIFEST_NAME = "cascade_model.json"
_OUTPUT_NAMES = {"probabilities", "class_ids", "classes", "predictions"}


class ServingManifest(BaseModel):
    """What the exported model takes and returns (``cascade_model.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    run_id: str
    transform_fingerprint: str
    problem_type: Literal["binary", "multiclass", "regression"]
    inputs: dict[str, Literal["float32", "string"]]
    key: str
    classes: list[str]
    outputs: list[str]
    signatures: list[str]


def key_name(spec: TransformSpec) -> str:
    name = spec.passthrough_key or "key"
    if name in spec.feature_names or name in _OUTPUT_NAMES:
        raise InvalidConfigError(
            f"the passthrough key {name!r} is also a feature or an output name; exclude it"
        )
    return name


def serving_outputs(predictions: tf.Tensor, label: LabelSpec) -> dict[str, tf.Tensor]:
    """The model's head output → the named serving outputs of its problem type."""
    if label.problem_type == "regression":
        return {"predictions": tf.reshape(predictions, [-1])}
    names = tf.constant(class_names(label), dtype=tf.string)
    if label.problem_type == "binary":
        positive = tf.reshape(predictions, [-1])
        probabilities = tf.stack([1.0 - positive, positive], axis=1)
        class_ids = tf.cast(positive >= 0.5, tf.int64)
    else:
        probabilities = predictions
        class_ids = tf.argmax(predictions, axis=1, output_type=tf.int64)
    return {
        "probabilities": probabilities,
        "class_ids": class_ids,
        "classes": tf.gather(names, class_ids),
    }


def _input_specs(spec: TransformSpec) -> dict[str, tf.TensorSpec]:
    return {
        feature.name: tf.TensorSpec(
            shape=(None,), dtype=feature_input_dtype(feature), name=feature.name
        )
        for feature in spec.features
    }


def export_serving_model(model: keras.Model, spec: TransformSpec, export_dir: Path) -> Path:
    """Write the SavedModel and its manifest to ``export_dir`` (a local directory)."""
    key = key_name(spec)
    label = spec.label
    feature_specs = _input_specs(spec)

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[feature_specs, tf.TensorSpec((None,), tf.string, name=key)]
    )
    def serve_with_key(
        features: dict[str, tf.Tensor], key_values: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        outputs = serving_outputs(model(features, training=False), label)
        return {**outputs, key: tf.identity(key_values)}

    @tf.function(input_signature=[feature_specs])  # type: ignore[untyped-decorator]
    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return serving_outputs(model(features, training=False), label)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE_WITH_KEY, fn=serve_with_key)
    archive.add_endpoint(name=SIGNATURE_WITHOUT_KEY, fn=serve)
    archive.write_out(str(export_dir), verbose=False)
    outputs = (
        ["predictions"]
        if label.problem_type == "regression"
        else ["probabilities", "class_ids", "classes"]
    )
    manifest = ServingManifest(
        dataset=spec.dataset,
        run_id=spec.run_id,
        transform_fingerprint=spec.fingerprint(),
        problem_type=label.problem_type,
        inputs={feature.name: feature_input_dtype(feature) for feature in spec.features},
        key=key,
        classes=class_names(label),
        outputs=outputs,
        signatures=[SIGNATURE_WITH_KEY, SIGNATURE_WITHOUT_KEY],
    )
    (export_dir / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    return export_dir
