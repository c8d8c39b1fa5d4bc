"""One loaded model version: its SavedModel signature and a fast predict.

The exported model takes raw feature values (``float32`` numeric, ``string``
categorical, shape ``[batch]``; NaN and ``""`` for missing) and passes a key through
(an input that is also an output). A request's instances are checked against that
signature by ``cascade.serving.request_rules`` — TF Serving's JSON rules, the same on
every route — and batched into one call of the concrete signature function; Keras is
never involved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from cascade.serving import request_rules

__all__ = ["InputError", "Servable", "load_servable"]

SIGNATURE = "serving_default"
WARMUP_BATCH_SIZES = (1, 2, 8, 64)
WARMUP_ROUNDS = 3

InputError = request_rules.RequestError
"""A request that does not fit the signature (the rules' error; HTTP 400)."""


def _dtype_name(dtype: Any) -> str:
    """TensorFlow's enum name of a dtype: ``DT_FLOAT``, ``DT_STRING``, ..."""
    from tensorflow.core.framework import types_pb2

    return str(types_pb2.DataType.Name(dtype.as_datatype_enum))


_NUMPY = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
}


def _missing(dtype: str) -> Any:
    return "" if dtype == "DT_STRING" else float("nan") if "FLOAT" in dtype else 0


class Servable:
    """A model version ready to answer: built by ``load_servable`` and warmed up."""

    def __init__(self, *, version: str, run_id: str, model_uri: str, loaded: Any) -> None:
        if SIGNATURE not in loaded.signatures:
            raise ValueError(f"the model has no {SIGNATURE!r} signature")
        self.version = version
        self.run_id = run_id
        self.model_uri = model_uri
        self._loaded = loaded  # owns the variables and tables the signature uses
        self._function = loaded.signatures[SIGNATURE]
        inputs: dict[str, Any] = dict(self._function.structured_input_signature[1])
        outputs: dict[str, Any] = dict(self._function.structured_outputs)
        for name, spec in inputs.items():
            if spec.shape.rank != 1 or _dtype_name(spec.dtype) not in {*_NUMPY, "DT_STRING"}:
                raise ValueError(
                    f"input {name!r} is {spec.dtype.name} of shape {spec.shape}: the model "
                    "server feeds one value per instance (shape [batch]) of a numeric, "
                    "bool or string dtype"
                )
        keys = [name for name in inputs if name in outputs and inputs[name].dtype == tf.string]
        self.key: str | None = keys[0] if len(keys) == 1 else None
        self.inputs: dict[str, str] = {
            name: _dtype_name(inputs[name].dtype) for name in sorted(inputs)
        }
        """Each input's dtype name (``DT_FLOAT``, ``DT_STRING``, ...): what requests must send."""
        self.outputs = sorted(outputs)
        self._output_dtypes = {name: _dtype_name(spec.dtype) for name, spec in outputs.items()}
        self._output_shapes = {name: spec.shape for name, spec in outputs.items()}
        self._string_outputs = frozenset(
            name for name, dtype in self._output_dtypes.items() if dtype == "DT_STRING"
        )
        self._input_order = sorted(inputs)  # how the signature flattens its keyword inputs
        self._call: Callable[[dict[str, Any]], dict[str, Any]] = self._structured_call
        self.flat_call = False
        self.loaded_at = time.time()

    @property
    def features(self) -> list[str]:
        """The inputs other than the passthrough key."""
        return [name for name in self.inputs if name != self.key]

    def signature_metadata(self) -> dict[str, Any]:
        """TF Serving's ``SignatureDefMap`` JSON for ``serving_default``."""

        def tensor(name: str, dtype: str, shape: Any) -> dict[str, Any]:
            dims = [{"size": str(-1 if size is None else size)} for size in shape]
            return {"dtype": dtype, "tensor_shape": {"dim": dims}, "name": name}

        inputs = {name: tensor(name, dtype, [None]) for name, dtype in self.inputs.items()}
        outputs = {
            name: tensor(name, dtype, list(self._output_shapes[name]))
            for name, dtype in self._output_dtypes.items()
        }
        signature = {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": "tensorflow/serving/predict",
        }
        return {"signature_def": {"signature_def": {SIGNATURE: signature}}}

    def predict(self, instances: Sequence[Any]) -> list[dict[str, Any]]:
        """Check ``instances`` by the request rules and batch them into one signature call;
        one dict of outputs per instance. ``InputError`` (HTTP 400) names the field."""
        checked = request_rules.columns(list(instances), self.inputs)
        return self.predict_columns(checked)

    def predict_columns(self, checked: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Predict on columns the request rules have already checked."""
        tensors = {name: self._tensor(name, values) for name, values in checked.items()}
        outputs = self._call(tensors)
        columns = {}
        for name in self.outputs:
            values = outputs[name].numpy().tolist()
            if name in self._string_outputs:
                values = [value.decode("utf-8", "replace") for value in values]
            columns[name] = values
        names = list(columns)
        return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]

    def _tensor(self, name: str, values: list[Any]) -> Any:
        dtype = self.inputs[name]
        if dtype == "DT_STRING":
            return tf.constant(values, dtype=tf.string)
        return tf.constant(np.asarray(values, dtype=_NUMPY[dtype]))

    def missing_row(self) -> dict[str, Any]:
        """An instance with every feature missing (NaN / ``""``), valid under the rules."""
        row = {name: _missing(dtype) for name, dtype in self.inputs.items()}
        if self.key:
            row[self.key] = "cascade-warmup"
        return row

    def warm_up(self) -> None:
        """Choose the call path, then call the signature at a few batch sizes so the first
        request pays nothing extra."""
        typical = {name: ("" if dtype == "DT_STRING" else 0) for name, dtype in self.inputs.items()}
        self._choose_call_path([typical, self.missing_row()])
        for _ in range(WARMUP_ROUNDS):
            for size in WARMUP_BATCH_SIZES:
                self.predict([typical] * size)

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

        checked = request_rules.columns(rows, self.inputs)
        tensors = {name: self._tensor(name, values) for name, values in checked.items()}
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


def _same(left: Any, right: Any) -> bool:
    if left.shape != right.shape or left.dtype != right.dtype:
        return False
    if np.issubdtype(left.dtype, np.floating):
        return bool(np.allclose(left, right, equal_nan=True))
    return bool(np.array_equal(left, right))


def load_servable(local_dir: Path, *, version: str, run_id: str, model_uri: str) -> Servable:
    """Load a SavedModel from a local directory, check its signature and warm it up."""
    loaded = tf.saved_model.load(str(local_dir))
    servable = Servable(version=version, run_id=run_id, model_uri=model_uri, loaded=loaded)
    servable.warm_up()
    return servable
