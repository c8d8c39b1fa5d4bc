"""Tiny SavedModels with the trainer's serving signature, built here for tests.

``serving_default`` takes raw feature values (``age`` float32, ``city`` string, each
``[batch]``; NaN / ``""`` for missing) and a ``key`` (string) passed through unchanged,
and returns ``probabilities`` ``[batch, 2]``, ``class_ids``, ``classes`` and ``key`` —
the shapes ``cascade.trainer.export`` writes for a binary problem. ``serving_features``
is the same without the key. ``weight`` changes the predictions (to tell versions
apart); ``broken`` makes every probability NaN (a model the probe must fail).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tensorflow as tf
from werkzeug.test import Client

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore
from cascade.serving.app import create_app
from cascade.serving.server import ModelServer
from cascade.serving.state import DeployedVersion, ServingState
from cascade.serving.uris import UriReader

CITIES = ["paris", "lyon", "nice"]
FEATURES = {"age": "float32", "city": "string"}


class TinyBinaryModel(tf.Module):
    def __init__(self, weight: float, broken: bool = False) -> None:
        super().__init__()
        self.weight = tf.Variable(weight, dtype=tf.float32)
        self.city_bias = tf.Variable([0.5, -0.5, 0.25, 0.0], dtype=tf.float32)  # last: OOV
        self.broken = broken
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(CITIES), tf.range(len(CITIES), dtype=tf.int64)
            ),
            default_value=len(CITIES),
        )

    def _outputs(self, age: tf.Tensor, city: tf.Tensor) -> dict[str, tf.Tensor]:
        filled = tf.where(tf.math.is_nan(age), tf.zeros_like(age), age)
        scaled = tf.clip_by_value(filled / 100.0, -10.0, 10.0)
        logit = self.weight * scaled + tf.gather(self.city_bias, self.table.lookup(city))
        positive = tf.sigmoid(logit)
        if self.broken:
            positive = positive * float("nan")
        probabilities = tf.stack([1.0 - positive, positive], axis=1)
        class_ids = tf.cast(positive >= 0.5, tf.int64)
        classes = tf.gather(tf.constant(["no", "yes"]), class_ids)
        return {"probabilities": probabilities, "class_ids": class_ids, "classes": classes}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="age"),
            tf.TensorSpec([None], tf.string, name="city"),
            tf.TensorSpec([None], tf.string, name="key"),
        ]
    )
    def serve_with_key(
        self, age: tf.Tensor, city: tf.Tensor, key: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        return {**self._outputs(age, city), "key": tf.identity(key)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="age"),
            tf.TensorSpec([None], tf.string, name="city"),
        ]
    )
    def serve(self, age: tf.Tensor, city: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(age, city)


def export_tiny_model(directory: Path, *, weight: float = 1.0, broken: bool = False) -> Path:
    """Write a SavedModel to ``directory`` (created) and return it."""
    model = TinyBinaryModel(weight, broken)
    tf.saved_model.save(
        model,
        str(directory),
        signatures={
            "serving_default": model.serve_with_key.get_concrete_function(),
            "serving_features": model.serve.get_concrete_function(),
        },
    )
    return directory


def expected_positive(age: float, city: str, weight: float = 1.0) -> float:
    """The model's positive-class probability, computed without TensorFlow."""
    import math

    biases = dict(zip(CITIES, [0.5, -0.5, 0.25], strict=True))
    filled = 0.0 if math.isnan(age) else age
    scaled = max(-10.0, min(10.0, filled / 100.0))
    logit = weight * scaled + biases.get(city, 0.0)
    return 1.0 / (1.0 + math.exp(-logit))


def upload_model(artifacts: ArtifactStore, run_id: str, directory: Path) -> str:
    """Copy an exported model to ``runs/<run_id>/training/model/`` and return its URI."""
    prefix = f"runs/{run_id}/training/model"
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            artifacts.write(f"{prefix}/{path.relative_to(directory).as_posix()}", path.read_bytes())
    return artifacts.uri(prefix)


class TypedModel(tf.Module):
    """``serving_default``: ``age`` float32, ``count`` int64, ``city`` string and a
    passthrough ``key``; returns ``score`` (float32) and the key — one input of each kind
    the request rules treat differently."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="age"),
            tf.TensorSpec([None], tf.int64, name="count"),
            tf.TensorSpec([None], tf.string, name="city"),
            tf.TensorSpec([None], tf.string, name="key"),
        ]
    )
    def serve(
        self, age: tf.Tensor, count: tf.Tensor, city: tf.Tensor, key: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        filled = tf.where(tf.math.is_finite(age), age, tf.zeros_like(age))
        score = filled + tf.cast(count, tf.float32) + tf.cast(tf.strings.length(city), tf.float32)
        return {"score": score, "key": tf.identity(key)}


def export_typed_model(directory: Path) -> Path:
    """Write the ``TypedModel`` SavedModel to ``directory`` and return it."""
    model = TypedModel()
    tf.saved_model.save(
        model, str(directory), signatures={"serving_default": model.serve.get_concrete_function()}
    )
    return directory


@contextlib.contextmanager
def serving_one_version(
    model_dir: Path, dataset: str, root: Path, **app_options: Any
) -> Iterator[Client]:
    """A model server (in memory, no network) serving ``model_dir`` as version 1 of
    ``dataset`` with all traffic; its test client."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = MemoryArtifactStore("cascade-artifacts")
    version = DeployedVersion(
        version="1", run_id="run-1", model_uri=str(model_dir), state="serving", deployed_at=now
    )
    state = ServingState(
        dataset=dataset,
        target="local",
        endpoint=dataset,
        updated_at=now,
        versions=[version],
        traffic={"1": 100},
    )
    store.write_json(DatasetPaths(dataset).serving, state)
    server = ModelServer(
        artifacts=lambda: store,
        storage=lambda: UriReader(lambda _: store),
        cache_dir=root / "cache",
        poll_interval_s=60,
    )
    server.start()
    try:
        yield Client(create_app(server, **app_options))
    finally:
        server.stop()
