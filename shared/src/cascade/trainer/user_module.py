"""The ``custom`` family: the user's model code, run inside the training job only.

The contract (docs/trainer.md, "Your own model code"). The module is one Python file that
defines either

- ``build_model(context: ModelContext) -> keras.Model``: a model from
  ``context.inputs`` (the preprocessed feature vector, ``(batch, context.width)``
  float32) to the head, ``(batch, context.output_units)``: a probability per class
  (sigmoid for binary, softmax for multiclass) or the predicted value (regression).
  Cascade puts it behind the transform, compiles it when it is not compiled (Adam at
  ``learning_rate``, the problem type's loss and metrics), fits it (early stopping,
  TensorBoard, the distribution strategy, which is in scope while it is built), exports,
  evaluates and probes it as it does the network; or
- ``run(context: ModelContext) -> keras.Model``: full control. It trains a model itself,
  from ``context.train_dataset`` / ``context.eval_dataset`` (batches of the raw feature
  dict and the target) with ``context.callbacks`` (Cascade's early stopping, TensorBoard
  and log lines) for at most ``context.epochs``, and returns a model from the raw feature
  inputs (``context.raw_inputs``; apply ``context.preprocessing`` to them) to the head.

It may declare ``HYPERPARAMETERS = {"name": default, ...}``: its own hyperparameters,
which the config, requests and tuning can set like Cascade's (``context.params``); a name
Cascade already has is refused.

The module is read at the generation the train step pinned, and refused when its SHA-256
differs from the pin. Whatever the module raises — on import, in ``build_model`` or in
``run`` — fails the run with the error, the module and the line summarised; a model that
breaks the serving contract is caught by the shape check here or by the probe after
export, and is never deployed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from cascade.core.errors import BadInputError
from cascade.core.hyperparameters import Hyperparameters
from cascade.core.job_spec import HyperparameterValue, ModelModule
from cascade.trainer.preprocessing import (
    build_preprocessing_model,
    feature_width,
    make_feature_inputs,
)
from cascade.trainer.storage import TrainerStorage
from cascade.transform.spec import LabelSpec, NumericTransform, TransformSpec, VocabularyTransform

__all__ = [
    "FeatureInfo",
    "ModelContext",
    "UserModule",
    "UserModuleError",
    "load_user_module",
]

MODULE_NAME = "cascade_user_model"
_CASCADE_NAMES = frozenset(Hyperparameters.model_fields)


class UserModuleError(BadInputError):
    """The user's model module failed or broke the contract; the run fails with this."""


@dataclass(frozen=True)
class FeatureInfo:
    """One feature as the model sees it: columns ``[offset, offset + width)`` of the
    preprocessed vector."""

    name: str
    kind: Literal["numeric", "vocabulary", "hash"]
    offset: int
    width: int
    vocabulary: tuple[str, ...] = ()


@dataclass
class ModelContext:
    """What the user's ``build_model`` / ``run`` receives."""

    inputs: keras.KerasTensor
    raw_inputs: dict[str, keras.KerasTensor]
    preprocessing: keras.Model
    features: list[FeatureInfo]
    label: LabelSpec
    output_units: int
    hyperparameters: Hyperparameters
    params: dict[str, HyperparameterValue]
    strategy: tf.distribute.Strategy
    epochs: int
    train_dataset: tf.data.Dataset | None = None
    eval_dataset: tf.data.Dataset | None = None
    callbacks: list[keras.callbacks.Callback] = field(default_factory=list)
    fit_arguments: dict[str, Any] = field(default_factory=dict)
    """``run``: ``model.fit(context.train_dataset, validation_data=context.eval_dataset,
    **context.fit_arguments)`` trains as Cascade would (epochs, callbacks, steps)."""

    @property
    def problem_type(self) -> str:
        return self.label.problem_type

    @property
    def width(self) -> int:
        return int(self.inputs.shape[-1])


def feature_infos(spec: TransformSpec) -> list[FeatureInfo]:
    infos, offset = [], 0
    for feature in spec.features:
        width = feature_width(feature)
        if isinstance(feature, NumericTransform):
            infos.append(FeatureInfo(feature.name, "numeric", offset, width))
        elif isinstance(feature, VocabularyTransform):
            infos.append(
                FeatureInfo(feature.name, "vocabulary", offset, width, tuple(feature.vocabulary))
            )
        else:
            infos.append(FeatureInfo(feature.name, "hash", offset, width))
        offset += width
    return infos


def describe(error: BaseException, path: Path) -> str:
    """``Type: message (line N: source)`` with the module's own innermost line."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    source = (getattr(error, "text", None) or "").strip()
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == str(path):
            line, source = frame.lineno, (frame.line or "").strip()
    where = f" (line {line}: {source})" if line else ""
    return f"{type(error).__name__}: {error}{where}"


@dataclass(frozen=True)
class UserModule:
    """The loaded module, where it came from, and its own hyperparameter defaults."""

    pin: ModelModule
    path: Path
    module: ModuleType
    defaults: dict[str, HyperparameterValue]

    @property
    def where(self) -> str:
        return f"{self.pin.uri}#{self.pin.generation}"

    @property
    def takes_over_training(self) -> bool:
        return callable(getattr(self.module, "run", None))

    @contextmanager
    def calling(self, what: str) -> Iterator[None]:
        """Turns whatever the module raises into a summarised ``UserModuleError``."""
        try:
            yield
        except UserModuleError:
            raise
        except Exception as error:  # noqa: BLE001 - user code may raise anything
            raise UserModuleError(
                f"model module {what} failed: {describe(error, self.path)}", uri=self.where
            ) from None

    def entry_point(self) -> Callable[[ModelContext], Any]:
        function = getattr(self.module, "run" if self.takes_over_training else "build_model")
        return function  # type: ignore[no-any-return]


def _defaults(module: ModuleType, where: str) -> dict[str, HyperparameterValue]:
    declared = getattr(module, "HYPERPARAMETERS", {})
    if not isinstance(declared, Mapping) or not all(
        isinstance(name, str) and isinstance(value, (bool, int, float, str))
        for name, value in declared.items()
    ):
        raise UserModuleError(
            "HYPERPARAMETERS must map names to numbers, strings or booleans", uri=where
        )
    taken = sorted(set(declared) & _CASCADE_NAMES)
    if taken:
        raise UserModuleError(
            f"HYPERPARAMETERS declares {', '.join(taken)}, which Cascade already has; rename them",
            uri=where,
        )
    return dict(declared)


def load_user_module(storage: TrainerStorage, pin: ModelModule, directory: Path) -> UserModule:
    """Read the pinned generation, check its hash, import it under a fixed name."""
    where = f"{pin.uri}#{pin.generation}"
    data = storage.read_bytes(pin.uri, generation=pin.generation)
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.sha256:
        raise UserModuleError(
            f"model module's SHA-256 is {digest}, not the pinned {pin.sha256}", uri=where
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{MODULE_NAME}.py"
    path.write_bytes(data)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise UserModuleError("cannot be imported", uri=where)
    module = importlib.util.module_from_spec(spec)
    loaded = UserModule(pin=pin, path=path, module=module, defaults={})
    with loaded.calling("import"):
        spec.loader.exec_module(module)
    if not (callable(getattr(module, "build_model", None)) or loaded.takes_over_training):
        raise UserModuleError("defines neither build_model(context) nor run(context)", uri=where)
    return UserModule(pin=pin, path=path, module=module, defaults=_defaults(module, where))


def make_context(
    spec: TransformSpec,
    hparams: Hyperparameters,
    params: dict[str, HyperparameterValue],
    strategy: tf.distribute.Strategy,
    output_units: int,
) -> ModelContext:
    """The context of ``build_model``; ``run`` also gets datasets and callbacks."""
    raw_inputs = make_feature_inputs(spec)
    preprocessing = build_preprocessing_model(spec)
    width = int(preprocessing.output.shape[-1])
    return ModelContext(
        inputs=keras.Input(shape=(width,), dtype="float32", name="preprocessed"),
        raw_inputs=raw_inputs,
        preprocessing=preprocessing,
        features=feature_infos(spec),
        label=spec.label,
        output_units=output_units,
        hyperparameters=hparams,
        params=params,
        strategy=strategy,
        epochs=hparams.epochs,
    )


def check_model(
    user: UserModule, model: Any, probe: Mapping[str, Any] | np.ndarray, units: int
) -> None:
    """The returned object is a Keras model whose output is ``(batch, units)``."""
    if not isinstance(model, keras.Model):
        raise UserModuleError(
            f"model module returned {type(model).__name__}, not a keras.Model", uri=user.where
        )
    with user.calling("model call"):
        output = model(probe, training=False)
    shape = tuple(output.shape)
    if len(shape) != 2 or shape[1] != units:
        raise UserModuleError(
            f"the model's output has shape {shape}; the head needs (batch, {units})",
            uri=user.where,
        )
