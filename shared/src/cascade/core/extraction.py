"""The records of a dataset's BigQuery extractions, and where they live.

In the artifacts bucket, under ``datasets/<dataset>/extraction/``:

- ``watermark.json`` (``ExtractionState``): how many extractions finished and the
  ``high`` watermark of the last one. Written once per extraction, with a generation
  precondition (Cloud Storage's one-write-per-second-per-object limit is never near).
- ``<sequence>/plan.json`` (``ExtractionPlan``, create-only): what extraction number
  ``sequence`` exports: ``low`` (the state's watermark) and ``high`` (the source's
  maximum read before the export). Whoever creates it first decides; every delivery,
  concurrent or after a crash, then exports that same range.
- ``<sequence>/claim.json``: the lease of the delivery doing the work
  (``cascade.core.claims.Claim``); a dead owner's lease expires and the next delivery
  takes over.
- ``<sequence>/staging/<attempt>/part-<12 digits>.parquet``: the shards the export
  writes (each attempt into its own folder; the artifacts bucket triggers nothing).
- ``<sequence>/exported.json`` (``ExportedShards``, create-only): the one attempt whose
  shards land. Shards land in the landing bucket as
  ``<dataset>/extracts/<extraction id>/part-<12 digits>.parquet``, each a normal landed
  file (one validate run each).

The extraction id is derived by the system: ``<sequence, 8 digits>-<digest of dataset,
sequence, low, high>``; no caller names it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cascade.core.bigquery_source import WatermarkType
from cascade.core.paths import RUN_ID_NAME_PATTERN, check_dataset_name

__all__ = [
    "SHARD_NAME",
    "ExportedShards",
    "ExtractRequest",
    "ExtractionPaths",
    "ExtractionPlan",
    "ExtractionState",
    "extraction_id_for",
]

SHARD_NAME = re.compile(r"part-[0-9]{12}\.parquet")
"""A shard of an export: BigQuery replaces the URI's ``*`` with 12 digits."""


class ExtractRequest(BaseModel):
    """Extract a dataset's BigQuery source, or, without ``dataset``, every dataset that
    has one (the message ``schedules.extract`` publishes). Not a step message: an
    extraction belongs to no run; the files it lands start runs."""

    model_config = ConfigDict(extra="forbid")
    TOPIC: ClassVar[str] = "extract-requests"

    dataset: str | None = Field(None, description="One dataset; none: every dataset.")
    request_id: str | None = Field(
        None, description="The caller's id for the request (logged; never a name)."
    )

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str | None) -> str | None:
        return None if value is None else check_dataset_name(value)

    @field_validator("request_id")
    @classmethod
    def _request_id_name(cls, value: str | None) -> str | None:
        if value is not None and not RUN_ID_NAME_PATTERN.fullmatch(value):
            raise ValueError("use letters, digits, '-' or '_', at most 128 characters")
        return value


class ExtractionState(BaseModel):
    """How far a dataset's source has been extracted."""

    model_config = ConfigDict(extra="forbid")

    sequence: int = Field(0, ge=0, description="Extractions finished so far.")
    watermark: str | int | None = Field(None, description="High watermark of the last one.")
    watermark_type: WatermarkType | None = None
    extraction_id: str | None = None
    updated_at: datetime | None = None


class ExtractionPlan(BaseModel):
    """The range extraction ``sequence`` exports, decided once."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    sequence: int = Field(ge=0)
    extraction_id: str
    watermark_column: str
    watermark_type: WatermarkType
    low: str | int | None
    high: str | int
    planned_at: datetime


class ExportedShards(BaseModel):
    """The export attempt whose shards land, and their object names (artifacts)."""

    model_config = ConfigDict(extra="forbid")

    extraction_id: str
    attempt: int = Field(ge=0)
    shards: list[str]
    exported_at: datetime


def extraction_id_for(dataset: str, sequence: int, low: str | int | None, high: str | int) -> str:
    """The system's id of an extraction: its number and a digest of its range."""
    digest = hashlib.sha256(f"{dataset}\n{sequence}\n{low!r}\n{high!r}".encode()).hexdigest()
    return f"{sequence:08d}-{digest[:12]}"


class ExtractionPaths:
    """Object names of a dataset's extractions (artifacts) and of its landed shards."""

    def __init__(self, dataset: str) -> None:
        self.dataset = check_dataset_name(dataset)
        self._root = f"datasets/{dataset}/extraction"

    @property
    def state(self) -> str:
        return f"{self._root}/watermark.json"

    def folder(self, sequence: int) -> str:
        return f"{self._root}/{sequence:08d}/"

    def plan(self, sequence: int) -> str:
        return f"{self.folder(sequence)}plan.json"

    def claim(self, sequence: int) -> str:
        return f"{self.folder(sequence)}claim.json"

    def exported(self, sequence: int) -> str:
        return f"{self.folder(sequence)}exported.json"

    def staging(self, sequence: int, attempt: int) -> str:
        """The folder (ending in ``/``) one export attempt writes its shards into."""
        return f"{self.folder(sequence)}staging/{attempt}/"

    def staging_root(self, sequence: int) -> str:
        return f"{self.folder(sequence)}staging/"

    def landed(self, extraction_id: str, shard: str) -> str:
        """Where a shard lands in the landing bucket (a file of the dataset)."""
        if not SHARD_NAME.fullmatch(shard) or not re.fullmatch(
            r"[0-9]{8}-[0-9a-f]{12}", extraction_id
        ):
            raise ValueError(f"not a shard of an extraction: {extraction_id!r}/{shard!r}")
        return f"{self.dataset}/extracts/{extraction_id}/{shard}"
