"""The dataset's baseline statistics in the artifacts bucket, merged file by file.

``datasets/<d>/baseline_stats.pb`` is a TFMD ``DatasetFeatureStatisticsList`` of all
accepted data. Accepting a file reads it, merges the file's statistics in, and writes
it back with ``if_generation_match``: a concurrent accept makes the write fail and the
merge is redone on the newer baseline, so no file's statistics are lost.

Merging is keyed by file: the object's metadata lists the most recent file ids merged
(and how many files the baseline covers). A step resumed after a crash between the
baseline write and its manifest finds its id there and does not merge twice; the list
holds the last ``RECENT_FILES`` ids, far more than can be accepted within one claim
lease, which is how long a crashed step waits before it is resumed.

The baseline is the schema's, not the last file's: only the columns the dataset's
schema lists are merged, and a merge also drops any column the schema no longer lists
(a baseline written before this rule heals on the next accepted file). A column a file
brings that the schema does not take stays a finding of that file until the schema
takes it (an edit, or ``cascade schema accept-feature``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import TransientError
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore, Payload, StoredObject
from cascade.core.validation_config import ValidationConfig
from cascade.validation.anomalies import Baseline
from cascade.validation.schema import restricted_to_schema
from cascade.validation.statistics import statistics_proto, summary_of_statistics
from cascade.validation.summaries import DatasetSummary
from cascade.validation.tfmd import statistics_pb2

__all__ = ["RECENT_FILES", "BaselineStore", "StoredBaseline"]

RECENT_FILES = 128
FILES_KEY = "cascade-files"
RECENT_KEY = "cascade-recent-files"


@dataclass(frozen=True)
class StoredBaseline:
    summary: DatasetSummary
    files: int
    recent_files: tuple[str, ...]
    generation: int

    @property
    def baseline(self) -> Baseline:
        return Baseline(summary=self.summary, files=self.files)


@dataclass(frozen=True)
class _BaselineCodec:
    """The baseline as a statistics proto, its file counts in the object's metadata."""

    uri: str
    config: ValidationConfig
    reads_metadata = True

    def decode(self, stored: StoredObject) -> StoredBaseline:
        return _decode(stored.data, stored.metadata, stored.generation, self.uri)

    def encode(self, value: StoredBaseline) -> Payload:
        proto = statistics_proto(value.summary, self.config, name="baseline")
        return Payload(
            proto.SerializeToString(),
            "application/x-protobuf",
            {FILES_KEY: str(value.files), RECENT_KEY: " ".join(value.recent_files)},
        )


class BaselineStore:
    """The baseline of one dataset, in the artifacts store."""

    def __init__(self, artifacts: ArtifactStore, dataset: str) -> None:
        self._artifacts = artifacts
        self._name = DatasetPaths(dataset).baseline_stats
        self.uri = artifacts.uri(self._name)

    def load(self) -> StoredBaseline | None:
        """The current baseline, or None before the first file is accepted."""
        stored = self._artifacts.read(self._name, metadata=True)
        if stored is None:
            return None
        return _decode(stored.data, stored.metadata, stored.generation, self.uri)

    def merge_file(
        self, file_id: str, summary: DatasetSummary, config: ValidationConfig, *, schema: Any
    ) -> StoredBaseline:
        """Merge one accepted file's summary in, exactly once per ``file_id``.

        Only the features ``schema`` (the schema the file was judged by) lists enter
        the baseline; any other column, of this file or already in the baseline, stays
        out.
        """

        def merge(current: StoredBaseline | None) -> StoredBaseline | None:
            if current is not None and file_id in current.recent_files:
                return None  # merged already (a resumed step): keep it
            return _merged(current, file_id, summary, config, schema)

        updated = self._artifacts.update(self._name, _BaselineCodec(self.uri, config), merge)
        assert updated.value is not None  # merge() only ever keeps an existing baseline
        return replace(updated.value, generation=updated.generation)


def _merged(
    current: StoredBaseline | None,
    file_id: str,
    summary: DatasetSummary,
    config: ValidationConfig,
    schema: Any,
) -> StoredBaseline:
    summary = restricted_to_schema(summary, schema)
    if current is None:
        return StoredBaseline(summary.compacted(config.max_tracked_values), 1, (file_id,), 0)
    previous = restricted_to_schema(current.summary, schema)
    merged = previous.merged(summary, config.max_tracked_values)
    recent = (*current.recent_files, file_id)[-RECENT_FILES:]
    return StoredBaseline(
        merged.compacted(config.max_tracked_values), current.files + 1, recent, current.generation
    )


def _decode(data: bytes, metadata: Mapping[str, Any], generation: int, uri: str) -> StoredBaseline:
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        statistics.ParseFromString(data)
    except DecodeError as error:
        raise TransientError(f"{uri} is not a statistics proto: {error}") from error
    recent = tuple(str(metadata.get(RECENT_KEY, "")).split())
    files = int(metadata.get(FILES_KEY) or max(len(recent), 1))
    return StoredBaseline(summary_of_statistics(statistics), files, recent, generation)
