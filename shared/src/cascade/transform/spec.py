"""The transform spec: the contract between the transform step and the trainer.

Written as ``runs/<run_id>/transform/transform.json``. Everything the trainer needs to
build the preprocessing inside the model is here, fitted from the dataset's merged
statistics; nothing is re-fitted at training or serving time.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SPEC_VERSION",
    "FeatureTransform",
    "HashTransform",
    "LabelSpec",
    "NumericTransform",
    "SnapshotFile",
    "SplitSpec",
    "TransformSpec",
    "VocabularyTransform",
]

SPEC_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericTransform(_Frozen):
    """z-score ``(x - mean) / std`` after filling missing/NaN with ``fill_value``.

    ``clip`` bounds the raw value first (so an extreme number cannot blow up the
    output); ``bucket_boundaries``, when set, adds a one-hot bucketization as well.
    """

    kind: Literal["numeric"] = "numeric"
    name: str
    mean: float
    std: float = Field(gt=0)
    fill_value: float
    clip: tuple[float, float] | None = None
    bucket_boundaries: list[float] = Field(default_factory=list)


class VocabularyTransform(_Frozen):
    """One-hot over ``vocabulary`` plus ``num_oov_buckets`` for unseen values."""

    kind: Literal["vocabulary"] = "vocabulary"
    name: str
    vocabulary: list[str] = Field(min_length=1)
    num_oov_buckets: int = Field(1, ge=1)
    fill_value: str = ""


class HashTransform(_Frozen):
    """High-cardinality strings hashed into ``hash_buckets`` (then embedded/one-hot)."""

    kind: Literal["hash"] = "hash"
    name: str
    hash_buckets: int = Field(ge=2)
    fill_value: str = ""


FeatureTransform = Annotated[
    NumericTransform | VocabularyTransform | HashTransform, Field(discriminator="kind")
]


class LabelSpec(_Frozen):
    name: str
    problem_type: Literal["binary", "multiclass", "regression"]
    classes: list[str] | None = Field(
        None,
        description="Class names in index order (classification); the label's "
        "values as strings map to these indices.",
    )

    @model_validator(mode="after")
    def _classes_match_problem(self) -> LabelSpec:
        if self.problem_type == "regression" and self.classes is not None:
            raise ValueError("a regression label has no classes")
        if self.problem_type == "binary" and self.classes is not None and len(self.classes) != 2:
            raise ValueError("a binary label has exactly two classes")
        return self


class SplitSpec(_Frozen):
    """Deterministic split: a row is eval when hash(salt, key or row) falls under the fraction."""

    method: Literal["key", "row_hash"] = "row_hash"
    key_column: str | None = None
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    salt: str = "cascade"


class SnapshotFile(_Frozen):
    """One accepted file in the data snapshot, pinned to its generation (lineage)."""

    uri: str
    generation: int
    rows: int = Field(ge=0)
    record_fields: list[str] | None = None
    """A stream file: the fields its records may hold, as validate judged it
    (``AcceptedFile.record_fields``); a record naming another is left out."""


class TransformSpec(_Frozen):
    spec_version: int = SPEC_VERSION
    dataset: str
    run_id: str
    label: LabelSpec
    features: list[FeatureTransform] = Field(min_length=1)
    passthrough_key: str | None = Field(
        None, description="A column the serving signature passes through unchanged."
    )
    split: SplitSpec
    snapshot: list[SnapshotFile]
    train_files: list[str] = Field(description="gs:// URIs of the train Parquet shards.")
    eval_files: list[str] = Field(description="gs:// URIs of the eval Parquet shards.")
    train_rows: int = Field(ge=0)
    eval_rows: int = Field(ge=0)
    created_at: datetime
    newest_files: list[SnapshotFile] = Field(
        default_factory=list,
        description="The snapshot's newest files (cascade.transform.newest): the trainer "
        "reports the newest_files slice on their rows.",
    )
    newest_column: str | None = Field(
        None,
        description="Boolean shard column, true for rows of newest_files; not a feature.",
    )
    newest_eval_rows: int = Field(0, ge=0, description="Eval rows from the newest files.")

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def fingerprint(self) -> str:
        """Hash of what shapes the model (features, label), not of where data lives."""
        content = self.model_dump_json(include={"spec_version", "label", "features"})
        return hashlib.sha256(content.encode()).hexdigest()[:16]
