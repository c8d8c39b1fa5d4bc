"""A SavedModel for batch tests that refuses some rows itself: ``serving_default`` takes
``code`` (string) and a passthrough ``key``, and returns ``value = to_number(code)``;
a ``code`` that is not a number (``""`` is 0) makes the whole call fail (InvalidArgumentError), the
way a model refuses a chunk that holds one bad row."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf


class RefusingModel(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="code"),
            tf.TensorSpec([None], tf.string, name="key"),
        ]
    )
    def serve(self, code: tf.Tensor, key: tf.Tensor) -> dict[str, tf.Tensor]:
        filled = tf.where(code == "", tf.fill(tf.shape(code), "0"), code)  # warm-up sends ""
        return {"value": tf.strings.to_number(filled, tf.float32), "key": tf.identity(key)}


class KeylessModel(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="age")])
    def serve(self, age: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"score": age * 2.0}


def export(module: tf.Module, directory: Path) -> Path:
    tf.saved_model.save(
        module,
        str(directory),
        signatures={"serving_default": module.serve.get_concrete_function()},  # type: ignore[attr-defined]
    )
    return directory
