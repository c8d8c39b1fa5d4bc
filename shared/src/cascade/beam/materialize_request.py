"""What the Beam materialisation is given and what it answers; no Beam imported.

The transform step (and the tests) build a ``MaterializeRequest`` from the run's
snapshot and fitted transform and store it as JSON under ``dataflow/`` of the artifacts
bucket; the job (``python -m cascade.beam --mode=materialize --request=… --output=…``)
reads it, writes the shards under ``--output`` and then ``result.json``: a
``MaterializeResult``, the ``SplitShards`` that ``write_split_shards`` returns in the
function, or the first file's bad input.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
from pydantic import BaseModel, ConfigDict, Field

from cascade.core.validation_config import ValidationConfig
from cascade.transform.materialize import DEFAULT_ROWS_PER_SHARD, SplitShards
from cascade.transform.shard_columns import shard_schema
from cascade.transform.spec import FeatureTransform, LabelSpec, SnapshotFile, SplitSpec

__all__ = ["MATERIALIZE_MODE", "MaterializeRequest", "MaterializeResult"]

MATERIALIZE_MODE = "materialize"
"""The ``--mode`` of ``python -m cascade.beam`` (and the template's ``mode``) that
materialises a split; the default, ``statistics``, summarises one file."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaterializeRequest(_Model):
    """A run's split as ``write_split_shards`` is called with it in the transform step."""

    dataset: str
    run_id: str
    files: list[SnapshotFile] = Field(min_length=1)
    """The snapshot's files, in order of acceptance (the order duplicates resolve in)."""
    label: LabelSpec
    features: list[FeatureTransform] = Field(min_length=1)
    passthrough_key: str | None = None
    split: SplitSpec
    newest: list[SnapshotFile] = Field(default_factory=list)
    newest_column: str | None = None
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    rows_per_shard: int = Field(DEFAULT_ROWS_PER_SHARD, ge=1)

    def row_schema(self) -> pa.Schema:
        """The shards' schema without the newest marker (what rows are cast to)."""
        return shard_schema(self.label, list(self.features), self.passthrough_key)

    def shard_schema(self) -> pa.Schema:
        """The shards' schema as written: the marker column last, when there is one."""
        schema = self.row_schema()
        if self.newest_column is not None:
            schema = schema.append(pa.field(self.newest_column, pa.bool_()))
        return schema


class MaterializeResult(_Model):
    """``result.json`` of a materialisation: the split's shards or why there are none."""

    status: Literal["ok", "bad_input"]
    message: str = ""
    train_files: list[str] = Field(default_factory=list)
    """gs:// URIs of the train shards, file by file in snapshot order."""
    eval_files: list[str] = Field(default_factory=list)
    train_rows: int = 0
    eval_rows: int = 0
    newest_eval_rows: int = 0
    file_eval_rows: list[int] = Field(default_factory=list)
    duplicate_rows: int = 0

    def split_shards(self) -> SplitShards:
        """As the function path's ``write_split_shards`` returns it (names as URIs)."""
        return SplitShards(
            train_names=list(self.train_files),
            eval_names=list(self.eval_files),
            train_rows=self.train_rows,
            eval_rows=self.eval_rows,
            newest_eval_rows=self.newest_eval_rows,
            file_eval_rows=list(self.file_eval_rows),
            duplicate_rows=self.duplicate_rows,
        )
