"""One loaded model version: its SavedModel signature, input checks and a fast predict.

The exported model takes raw feature values (``float32`` numeric, ``string``
categorical, shape ``[batch]``; NaN and ``""`` for missing) and passes an optional key
through (an input that is also an output). A request's instances are checked against
that signature — which the trainer built from the run's transform spec — and batched
into one call of the concrete signature function; Keras is never involved.

Instances are JSON objects of feature values. ``null`` is a missing value; a missing
feature is an error (so a typo cannot silently become a missing value), as is a field
the model does not know or a value of the wrong type. Errors name the instance and field.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["InputError", "Servable", "load_servable"]

SIGNATURE = "serving_default"
WARMUP_BATCH_SIZES = (1, 2, 8, 64)
WARMUP_ROUNDS = 3
_DTYPES = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int64": "DT_INT64",
    "int32": "DT_INT32",
    "string": "DT_STRING",
    "bool": "DT_BOOL",
}


class InputError(ValueError):
    """The request does not fit the model's signature; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class _Field:
    name: str
    is_string: bool


class Servable:
    """A model version ready to answer: built by ``load_servable`` and warmed up."""

    def __init__(self, *, version: str, run_id: str, model_uri: str, loaded: Any) -> None:
        if SIGNATURE not in loaded.signatures:
            raise InputError(f"the model has no {SIGNATURE!r} signature")
        self.version = version
        self.run_id = run_id
        self.model_uri = model_uri
        self._loaded = loaded  # owns the variables and tables the signature uses
        self._function = loaded.signatures[SIGNATURE]
        inputs: dict[str, Any] = dict(self._function.structured_input_signature[1])
        outputs: dict[str, Any] = dict(self._function.structured_outputs)
        keys = [name for name in inputs if name in outputs and inputs[name].dtype == tf.string]
        self.key: str | None = keys[0] if len(keys) == 1 else None
        self.features = [
            _Field(name, inputs[name].dtype == tf.string)
            for name in sorted(inputs)
            if name != self.key
        ]
        self._feature_names = frozenset(field.name for field in self.features)
        self._allowed = self._feature_names | ({self.key} if self.key else set())
        self.outputs = sorted(outputs)
        self._string_outputs = frozenset(
            name for name, spec in outputs.items() if spec.dtype == tf.string
        )
        self._output_dtypes = {name: spec.dtype.name for name, spec in outputs.items()}
        self._input_order = sorted(inputs)  # how the signature flattens its keyword inputs
        self._call: Callable[[dict[str, Any]], dict[str, Any]] = self._structured_call
        self.flat_call = False
        self.loaded_at = time.time()

    @property
    def input_types(self) -> dict[str, str]:
        types = {field.name: "string" if field.is_string else "float32" for field in self.features}
        if self.key:
            types[self.key] = "string (optional passthrough key)"
        return types

    def signature_metadata(self) -> dict[str, Any]:
        """TF Serving's ``SignatureDefMap`` JSON for ``serving_default``."""

        def tensor(name: str, dtype: str) -> dict[str, Any]:
            return {"dtype": dtype, "tensor_shape": {"dim": [{"size": "-1"}]}, "name": name}

        inputs = {
            field.name: tensor(field.name, "DT_STRING" if field.is_string else "DT_FLOAT")
            for field in self.features
        }
        if self.key:
            inputs[self.key] = tensor(self.key, "DT_STRING")
        outputs = {
            name: tensor(name, _DTYPES.get(dtype, dtype))
            for name, dtype in self._output_dtypes.items()
        }
        signature = {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": "tensorflow/serving/predict",
        }
        return {"signature_def": {"signature_def": {SIGNATURE: signature}}}

    def predict(self, instances: Sequence[Any]) -> list[dict[str, Any]]:
        """Check and batch ``instances`` into one signature call; one dict per instance."""
        with_key = self._check_fields(instances)
        tensors = {field.name: self._column(field, instances) for field in self.features}
        if self.key is not None:
            tensors[self.key] = tf.constant(
                self._keys(instances) if with_key else [""] * len(instances)
            )
        outputs = self._call(tensors)
        columns = {}
        for name in self.outputs:
            if name == self.key and not with_key:
                continue
            values = outputs[name].numpy().tolist()
            if name in self._string_outputs:
                values = [value.decode("utf-8", "replace") for value in values]
            columns[name] = values
        names = list(columns)
        return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]

    def warm_up(self) -> None:
        """Choose the call path, then call the signature at a few batch sizes so the first
        request pays nothing extra."""
        row: dict[str, Any] = {f.name: ("" if f.is_string else 0.0) for f in self.features}
        self._choose_call_path([row, {f.name: None for f in self.features}])
        for _ in range(WARMUP_ROUNDS):
            for size in WARMUP_BATCH_SIZES:
                self.predict([row] * size)

    def _structured_call(self, tensors: dict[str, Any]) -> dict[str, Any]:
        return dict(self._function(**tensors))

    def _choose_call_path(self, rows: list[dict[str, Any]]) -> None:
        """Use the concrete function's flat call when this TensorFlow has one that gives the
        same outputs as the public call on ``rows``.

        The public call binds and converts keyword arguments on every request (~0.35 ms
        here, more than the model itself); the flat call takes the tensors in the order the
        signature flattens them. It is checked per model at load time, so a TensorFlow whose
        internals differ simply keeps the public call.
        """
        flat = getattr(self._function, "_call_flat", None)
        captured = getattr(self._function, "captured_inputs", None)
        if flat is None or captured is None:
            return
        order = self._input_order

        def flat_call(tensors: dict[str, Any]) -> dict[str, Any]:
            return dict(flat([tensors[name] for name in order], captured))

        tensors = {field.name: self._column(field, rows) for field in self.features}
        if self.key is not None:
            tensors[self.key] = tf.constant(["probe"] * len(rows))
        try:
            fast, public = flat_call(tensors), self._structured_call(tensors)
            same = set(fast) == set(public) and all(
                _same(fast[name].numpy(), public[name].numpy()) for name in public
            )
        except (TypeError, ValueError, KeyError, tf.errors.OpError):
            return
        if same:
            self._call = flat_call
            self.flat_call = True

    def _check_fields(self, instances: Sequence[Any]) -> bool:
        with_key = False
        for index, instance in enumerate(instances):
            if type(instance) is not dict:
                raise InputError(
                    f"instance {index} must be a JSON object of feature values, "
                    f"not {type(instance).__name__}"
                )
            if instance.keys() == self._feature_names:
                continue
            unknown = instance.keys() - self._allowed
            if unknown:
                name = sorted(unknown)[0]
                raise InputError(
                    f"instance {index}: unknown field {name!r}; the model takes "
                    f"{', '.join(sorted(self._allowed))}",
                    field=name,
                )
            missing = self._feature_names - instance.keys()
            if missing:
                name = sorted(missing)[0]
                raise InputError(
                    f"instance {index}: missing feature {name!r} (send null for a missing value)",
                    field=name,
                )
            with_key = with_key or self.key in instance
        return with_key

    def _column(self, field: _Field, instances: Sequence[dict[str, Any]]) -> Any:
        values = [instance[field.name] for instance in instances]
        if field.is_string:
            for index, value in enumerate(values):
                if type(value) is not str:
                    if value is not None:
                        raise _type_error(index, field, value, "a string or null")
                    values[index] = ""
            return tf.constant(values, dtype=tf.string)
        for index, value in enumerate(values):
            kind = type(value)
            if kind is not float and kind is not int:
                if value is not None:
                    raise _type_error(index, field, value, "a number or null")
                values[index] = math.nan
        return tf.constant(np.asarray(values, dtype=np.float32))

    def _keys(self, instances: Sequence[dict[str, Any]]) -> list[str]:
        keys = []
        for index, instance in enumerate(instances):
            value = instance.get(self.key or "")
            if value is None:
                keys.append("")
            elif type(value) is str or type(value) is int:
                keys.append(str(value))
            else:
                assert self.key is not None
                raise _type_error(index, _Field(self.key, True), value, "a string or integer")
        return keys


def _same(left: Any, right: Any) -> bool:
    if left.shape != right.shape or left.dtype != right.dtype:
        return False
    if np.issubdtype(left.dtype, np.floating):
        return bool(np.allclose(left, right, equal_nan=True))
    return bool(np.array_equal(left, right))


def _type_error(index: int, field: _Field, value: Any, expected: str) -> InputError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return InputError(
        f"instance {index}: field {field.name!r} must be {expected}, "
        f"got {type(value).__name__} {shown}",
        field=field.name,
    )


def load_servable(local_dir: Path, *, version: str, run_id: str, model_uri: str) -> Servable:
    """Load a SavedModel from a local directory, check its signature and warm it up."""
    loaded = tf.saved_model.load(str(local_dir))
    servable = Servable(version=version, run_id=run_id, model_uri=model_uri, loaded=loaded)
    servable.warm_up()
    return servable
