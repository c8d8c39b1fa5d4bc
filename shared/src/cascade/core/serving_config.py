"""The ``serving`` section of a dataset's pipeline config: how its model server answers.

- ``dynamic`` (default): the model answers every request;
- ``static``: answers are looked up in the precomputed store only (a batch prediction job
  scored every key); a key without an answer is a 404 naming it;
- ``hybrid``: the precomputed answer when there is one (the most requested keys, the
  "head"), else the model (the long tail).

A hybrid dataset with a ``batch_source`` may say which keys its batches precompute:
``head: {keys: N, window_days: D}`` scores only the source rows whose key is among the
``N`` keys requested most over the last ``D`` days of the request log
(``cascade.batch.head``); without ``head`` a batch scores the whole source.

The deploy step records the mode in ``models/<dataset>/serving.json``; the model server
reads it there.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_BATCH_FILES",
    "MAX_HEAD_KEYS",
    "MAX_HEAD_WINDOW_DAYS",
    "SERVING_MODES",
    "BatchFiles",
    "BatchSource",
    "BatchTable",
    "HeadConfig",
    "ServingConfig",
    "ServingMode",
    "check_batch_files",
    "check_batch_table",
]

ServingMode = Literal["dynamic", "static", "hybrid"]
SERVING_MODES: tuple[str, ...] = ("dynamic", "static", "hybrid")


MAX_BATCH_FILES = 100
MAX_HEAD_KEYS = 10_000_000
"""Most keys a head holds: the precomputed store's rows for one version, and what one
BigQuery query job materialises for a Vertex AI batch."""
MAX_HEAD_WINDOW_DAYS = 90
_TABLE = re.compile(
    r"[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z_][A-Za-z0-9_]{0,1023}\.[A-Za-z_][A-Za-z0-9_]{0,1023}"
)
_GCS_URI = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]/[^\x00-\x1f\x7f]{0,1024}")


def check_batch_table(value: str) -> str:
    """A BigQuery table to score: ``project.dataset.table`` (names are data, never SQL)."""
    if not _TABLE.fullmatch(value):
        raise ValueError(f"not a BigQuery table id project.dataset.table: {value[:120]!r}")
    return value


def check_batch_files(values: tuple[str, ...]) -> tuple[str, ...]:
    """``gs://bucket/object`` URIs (or one ``gs://bucket/prefix/``) to score."""
    if len(values) > MAX_BATCH_FILES:
        raise ValueError(f"at most {MAX_BATCH_FILES} files per batch, not {len(values)}")
    for value in values:
        if not _GCS_URI.fullmatch(value):
            raise ValueError(f"not a gs://bucket/object URI: {value[:120]!r}")
    return values


BatchTable = Annotated[str, AfterValidator(check_batch_table)]
"""A BigQuery table to score, checked (``project.dataset.table``)."""
BatchFiles = Annotated[tuple[str, ...], AfterValidator(check_batch_files)]
"""Cloud Storage objects to score, checked (at most ``MAX_BATCH_FILES``)."""


class BatchSource(BaseModel):
    """What a batch prediction scores: a BigQuery table, or Cloud Storage files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: BatchTable | None = Field(None, description="project.dataset.table")
    files: BatchFiles = Field((), description="gs:// objects, or one gs://bucket/prefix/")

    @model_validator(mode="after")
    def _one_source(self) -> BatchSource:
        if (self.table is None) == (not self.files):
            raise ValueError("a batch source is either a table or files, not both or neither")
        return self


class HeadConfig(BaseModel):
    """The head a hybrid dataset precomputes: its ``keys`` most requested keys over the
    last ``window_days`` days of the request log (ties broken by key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: int = Field(
        ...,
        strict=True,
        ge=1,
        le=MAX_HEAD_KEYS,
        description="How many of the most requested keys a batch scores.",
    )
    window_days: int = Field(
        7,
        strict=True,
        ge=1,
        le=MAX_HEAD_WINDOW_DAYS,
        description="Days of the request log the requests are counted over.",
    )


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ServingMode = Field(
        "dynamic", description="dynamic (the model), static (lookup only) or hybrid."
    )
    batch_source: BatchSource | None = Field(
        None,
        description="What to score when a version of a static or hybrid dataset is "
        "deployed (the deploy step asks batch-predict), and what a batch-predict request "
        "without a source scores.",
    )
    head: HeadConfig | None = Field(
        None,
        description="hybrid only, with a batch_source: score only the source rows of the "
        "most requested keys (the request log's top `keys` over `window_days`).",
    )

    @model_validator(mode="after")
    def _head_needs_a_hybrid_batch(self) -> ServingConfig:
        if self.head is not None and self.mode != "hybrid":
            raise ValueError(
                f"serving.head: only a hybrid dataset precomputes a head, not a {self.mode} "
                "one (static answers only what was precomputed, so its batch scores every "
                "key; dynamic precomputes nothing)"
            )
        if self.head is not None and self.batch_source is None:
            raise ValueError(
                "serving.head: needs serving.batch_source, the rows the head's keys are scored from"
            )
        return self
