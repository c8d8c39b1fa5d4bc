"""The model: raw feature inputs → preprocessing (from the spec) → MLP → head.

The preprocessing and the trainable part are separate sub-models, so a test can feed the
trainable part the output of ``transform_features`` and compare with the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from cascade.core.hyperparameters import Hyperparameters
from cascade.trainer.metrics import class_names
from cascade.trainer.preprocessing import (
    build_preprocessing_model,
    make_feature_inputs,
    preprocessed_width,
)
from cascade.transform.spec import LabelSpec, TransformSpec

__all__ = [
    "CascadeModel",
    "Rescale",
    "TargetScale",
    "TrainerModel",
    "build_model",
    "class_names",
    "compile_model",
    "output_units",
]


class CascadeModel(keras.Model):  # type: ignore[misc]
    """The functional model, with two fixes that let Keras 3.15's ``fit`` run under
    ``MultiWorkerMirroredStrategy``:

    - before training, ``fit`` builds the model from one batch that it averages across
      replicas (``strategy.reduce("MEAN", batch)``), which fails for a dict of features
      and for strings; the batch only supplies shapes and dtypes, so the first local
      replica's values are used instead;
    - each step's logs are averaged across workers with ``reduce("MEAN", log, axis=0)``,
      which fails for scalars; with ``multi_worker_logs`` set, the steps return each log
      as a one-element vector, which that reduction turns back into the mean scalar.
      (Epoch logs are read from the metric variables, aggregated over all workers.)
    """

    multi_worker_logs = False

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if iterator is not None and data_batch is None and strategy is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: (
                        strategy.experimental_local_results(value)[0]
                        if isinstance(value, tf.distribute.DistributedValues)
                        else value
                    ),
                    next(batches),
                )
                break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _vector_logs(self, logs: dict[str, Any]) -> dict[str, Any]:
        if not self.multi_worker_logs:
            return logs
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    def train_step(self, data: Any) -> dict[str, Any]:
        return self._vector_logs(super().train_step(data))

    def test_step(self, data: Any) -> dict[str, Any]:
        return self._vector_logs(super().test_step(data))


def output_units(label: LabelSpec) -> int:
    if label.problem_type == "multiclass":
        return len(class_names(label))
    return 1


@dataclass(frozen=True)
class TrainerModel:
    """The compiled model and its two halves (they share layers and weights)."""

    model: keras.Model
    preprocessing: keras.Model
    trainable: keras.Model
    label: LabelSpec


class Rescale(keras.layers.Layer):  # type: ignore[misc]
    """``value * scale + offset``: a regression head that predicts the standardized target
    and answers in the target's units, so training starts at the mean, on a unit scale."""

    def __init__(self, scale: float, offset: float, **kwargs: Any) -> None:
        super().__init__(trainable=False, **kwargs)
        self.scale, self.offset = scale, offset

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs * self.scale + self.offset

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@dataclass(frozen=True)
class TargetScale:
    """Mean and standard deviation of a regression target on the training split."""

    mean: float = 0.0
    std: float = 1.0


def _build_trainable(
    width: int, label: LabelSpec, hparams: Hyperparameters, target: TargetScale
) -> keras.Model:
    vector = keras.Input(shape=(width,), dtype="float32", name="preprocessed")
    hidden = vector
    for layer in range(hparams.hidden_layers):
        hidden = keras.layers.Dense(
            hparams.hidden_units, activation="relu", name=f"hidden_{layer}"
        )(hidden)
        if hparams.dropout > 0:
            hidden = keras.layers.Dropout(hparams.dropout, name=f"dropout_{layer}")(hidden)
    activation = {"binary": "sigmoid", "multiclass": "softmax", "regression": None}
    output = keras.layers.Dense(
        output_units(label), activation=activation[label.problem_type], name="head"
    )(hidden)
    if label.problem_type == "regression":
        output = Rescale(target.std, target.mean, name="target_scale")(output)
    return keras.Model(inputs=vector, outputs=output, name="mlp")


def compile_model(model: keras.Model, label: LabelSpec, learning_rate: float) -> None:
    """Adam at ``learning_rate`` and the problem type's loss and metrics."""
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if label.problem_type == "binary":
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
        )
    elif label.problem_type == "multiclass":
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    else:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.MeanSquaredError(),
            metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
        )


def build_model(
    spec: TransformSpec, hparams: Hyperparameters, target: TargetScale | None = None
) -> TrainerModel:
    """Build and compile the model; call it inside the distribution strategy's scope.
    ``target``: the regression target's training mean and deviation (ignored otherwise)."""
    keras.utils.set_random_seed(hparams.seed)
    preprocessing = build_preprocessing_model(spec)
    width = preprocessed_width(spec)
    trainable = _build_trainable(width, spec.label, hparams, target or TargetScale())
    inputs = make_feature_inputs(spec)
    outputs = trainable(preprocessing(inputs))
    model = CascadeModel(inputs=inputs, outputs=outputs, name="cascade")
    compile_model(model, spec.label, hparams.learning_rate)
    return TrainerModel(
        model=model, preprocessing=preprocessing, trainable=trainable, label=spec.label
    )
