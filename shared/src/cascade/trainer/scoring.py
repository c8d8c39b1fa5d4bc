"""Eval metrics of the candidate and of the deployed (baseline) model on the same split.

Both models are evaluated the way they serve: loaded as SavedModels and called through
their ``serving_default`` signature with raw feature values, so the numbers describe
what clients would get. Metrics are computed with NumPy by ``cascade.trainer.metrics``
(no TensorFlow there: the continued evaluation of the served model computes the same
metrics on the same slices in a Cloud Function), overall, for each value of each
slice feature and on the rows of the transform's newest files (``newest_files``: the
boolean column ``TransformSpec.newest_column`` of the eval shards, which is no model
input), and written to ``<output_dir>/metrics.json`` (``EvaluationReport``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.trainer.data import LabelEncoder, numeric_column, string_column
from cascade.trainer.export import SIGNATURE_WITH_KEY
from cascade.trainer.metrics import (
    MetricSet,
    ModelMetrics,
    SliceMetrics,
    compute_metrics,
    model_metrics,
)
from cascade.transform.spec import LabelSpec, TransformSpec

__all__ = [
    "EvaluationReport",
    "MetricSet",
    "ModelMetrics",
    "ServingModel",
    "SliceMetrics",
    "compute_metrics",
    "evaluate_model",
    "load_eval_table",
    "newest_rows",
]


class EvaluationReport(BaseModel):
    """``metrics.json``: the candidate's eval metrics and, when there is one, the baseline's."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    run_id: str
    problem_type: Literal["binary", "multiclass", "regression"]
    eval_examples: int
    slice_features: list[str]
    candidate: ModelMetrics
    baseline: ModelMetrics | None = None
    baseline_error: str | None = Field(
        None, description="Why the baseline could not be evaluated (the run still succeeds)."
    )
    newest_files: list[str] = Field(
        default_factory=list,
        description="``uri#generation`` of the files the newest_files metrics are on.",
    )
    model_family: Literal["network", "boosted_trees", "custom"] = Field(
        "network", description="The family of the candidate (with model auto: the one kept)."
    )
    model_selection: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="model auto: each family's overall eval metrics; the lower loss was kept.",
    )
    model_module: str | None = Field(
        None, description="model custom: the user's module as ``gs://…#generation``."
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    epochs_trained: int = Field(0, description="Epochs (network) or boosting rounds (trees).")
    trial_id: str | None = None
    created_at: datetime

    def metric(self, name: str) -> float:
        """A candidate metric by name; ``eval_loss`` and ``loss`` are the same metric."""
        metrics = self.candidate.overall.metrics
        for candidate in (name, name.removeprefix("eval_")):
            if candidate in metrics:
                return metrics[candidate]
        raise InvalidConfigError(
            f"metric {name!r} is not computed for {self.problem_type}; "
            f"available: {', '.join(sorted(metrics))} (optionally prefixed eval_)"
        )


# Models and data ------------------------------------------------------------------------


@dataclass
class ServingModel:
    """A loaded SavedModel's signature, kept together with the object that owns it."""

    uri: str
    loaded: Any
    signature: Callable[..., dict[str, tf.Tensor]]

    @classmethod
    def load(cls, local_dir: Path, uri: str, signature: str = SIGNATURE_WITH_KEY) -> ServingModel:
        loaded = tf.saved_model.load(str(local_dir))
        if signature not in loaded.signatures:
            raise BadInputError(
                f"no {signature!r} signature (has {list(loaded.signatures)})", uri=uri
            )
        return cls(uri=uri, loaded=loaded, signature=loaded.signatures[signature])

    @property
    def input_specs(self) -> dict[str, tf.TensorSpec]:
        return dict(self.signature.structured_input_signature[1])  # type: ignore[attr-defined]

    @property
    def output_names(self) -> set[str]:
        return set(self.signature.structured_outputs)  # type: ignore[attr-defined]

    def predict(
        self, inputs: Mapping[str, npt.NDArray[Any]], batch_size: int = 4096
    ) -> dict[str, npt.NDArray[Any]]:
        rows = len(next(iter(inputs.values())))
        parts: dict[str, list[npt.NDArray[Any]]] = {}
        for start in range(0, rows, batch_size):
            batch = {
                name: tf.constant(
                    values[start : start + batch_size], dtype=self.input_specs[name].dtype
                )
                for name, values in inputs.items()
            }
            for name, value in self.signature(**batch).items():
                parts.setdefault(name, []).append(value.numpy())
        return {name: np.concatenate(values) for name, values in parts.items()}

    def inputs_from(self, table: pa.Table) -> dict[str, npt.NDArray[Any]]:
        """Signature inputs from eval columns; a passthrough key absent from the data is ``""``."""
        inputs: dict[str, npt.NDArray[Any]] = {}
        for name, spec in self.input_specs.items():
            if name in table.column_names:
                read = numeric_column if spec.dtype.is_floating else string_column
                inputs[name] = read(table, name)
            elif spec.dtype == tf.string and name in self.output_names:
                inputs[name] = np.full(table.num_rows, "", dtype=object)
            else:
                raise BadInputError(f"the model needs input {name!r}, absent from the eval data")
        return inputs


def load_eval_table(files: Sequence[Path], label: LabelSpec) -> pa.Table:
    """The eval shards as one table, rows without a label dropped."""
    if not files:
        raise BadInputError("no eval shards")
    table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="permissive")
    if label.name not in table.column_names:
        raise BadInputError(f"the eval data has no label column {label.name!r}")
    return table.filter(pc.is_valid(table.column(label.name)))


def evaluate_model(
    model: ServingModel,
    table: pa.Table,
    spec: TransformSpec,
    slice_features: Sequence[str],
) -> ModelMetrics:
    """The model's metrics on ``table``, overall, per value of each slice feature and on
    the rows of the newest files (when the spec names the column that marks them)."""
    targets = LabelEncoder(spec.label).encode(table.column(spec.label.name))
    outputs = model.predict(model.inputs_from(table))
    slice_columns = {feature: string_column(table, feature) for feature in slice_features}
    return model_metrics(
        model.uri,
        spec.label.problem_type,
        targets,
        outputs,
        slice_columns,
        newest_rows=newest_rows(table, spec),
    )


def newest_rows(table: pa.Table, spec: TransformSpec) -> npt.NDArray[np.bool_] | None:
    """True for the rows of ``table`` from the spec's newest files; None when unmarked."""
    column = spec.newest_column
    if column is None or column not in table.column_names:
        return None
    marked = pc.fill_null(pc.cast(table.column(column), pa.bool_()), False)
    return np.asarray(marked.to_numpy(zero_copy_only=False), dtype=np.bool_)
