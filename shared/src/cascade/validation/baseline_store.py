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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[import-untyped,unused-ignore]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import ConcurrentUpdateError, TransientError
from cascade.core.paths import DatasetPaths
from cascade.core.validation_config import ValidationConfig
from cascade.validation.anomalies import Baseline
from cascade.validation.statistics import statistics_proto, summary_of_statistics
from cascade.validation.summaries import DatasetSummary
from cascade.validation.tfmd import statistics_pb2

__all__ = ["RECENT_FILES", "BaselineStore", "StoredBaseline"]

RECENT_FILES = 128
FILES_KEY = "cascade-files"
RECENT_KEY = "cascade-recent-files"
_TRANSIENT = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    ConnectionError,
    TimeoutError,
)
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class StoredBaseline:
    summary: DatasetSummary
    files: int
    recent_files: tuple[str, ...]
    generation: int

    @property
    def baseline(self) -> Baseline:
        return Baseline(summary=self.summary, files=self.files)


class BaselineStore:
    def __init__(
        self, client: storage.Client, bucket_name: str, dataset: str, *, max_attempts: int = 20
    ) -> None:
        self._bucket = client.bucket(bucket_name)
        self._name = DatasetPaths(dataset).baseline_stats
        self._max_attempts = max_attempts
        self.uri = f"gs://{bucket_name}/{self._name}"

    def _guarded(self, action: str, call: Callable[[], ResultT]) -> ResultT:
        try:
            return call()
        except _TRANSIENT as error:
            raise TransientError(f"{action} {self.uri}: {error}") from error

    def load(self) -> StoredBaseline | None:
        """The current baseline, or None before the first file is accepted."""
        for _ in range(self._max_attempts):
            blob = self._guarded("reading", lambda: self._bucket.get_blob(self._name))
            if blob is None:
                return None
            generation = int(blob.generation or 0)
            pinned = self._bucket.blob(self._name, generation=generation)
            try:
                data = self._guarded("reading", pinned.download_as_bytes)
            except gexc.NotFound:
                continue  # replaced between metadata and data: read the newer one
            return _decode(data, blob.metadata or {}, generation, self.uri)
        raise ConcurrentUpdateError(f"{self.uri} kept changing while being read")

    def merge_file(
        self, file_id: str, summary: DatasetSummary, config: ValidationConfig
    ) -> StoredBaseline:
        """Merge one accepted file's summary in, exactly once per ``file_id``."""
        for _ in range(self._max_attempts):
            current = self.load()
            if current is not None and file_id in current.recent_files:
                return current
            merged = _merged(current, file_id, summary, config)
            if self._write(merged, config, expected_generation=_generation(current)):
                return merged
        raise ConcurrentUpdateError(
            f"{self.uri}: lost {self._max_attempts} races merging file {file_id}"
        )

    def _write(
        self, baseline: StoredBaseline, config: ValidationConfig, *, expected_generation: int
    ) -> bool:
        blob = self._bucket.blob(self._name)
        blob.metadata = {
            FILES_KEY: str(baseline.files),
            RECENT_KEY: " ".join(baseline.recent_files),
        }
        payload = statistics_proto(baseline.summary, config, name="baseline").SerializeToString()
        try:
            self._guarded(
                "writing",
                lambda: blob.upload_from_string(
                    payload,
                    content_type="application/x-protobuf",
                    if_generation_match=expected_generation,
                ),
            )
        except gexc.PreconditionFailed:
            return False
        return True


def _generation(current: StoredBaseline | None) -> int:
    return 0 if current is None else current.generation


def _merged(
    current: StoredBaseline | None,
    file_id: str,
    summary: DatasetSummary,
    config: ValidationConfig,
) -> StoredBaseline:
    if current is None:
        return StoredBaseline(summary.compacted(config.max_tracked_values), 1, (file_id,), 0)
    merged = current.summary.merged(summary, config.max_tracked_values)
    recent = (*current.recent_files, file_id)[-RECENT_FILES:]
    return StoredBaseline(
        merged.compacted(config.max_tracked_values), current.files + 1, recent, current.generation
    )


def _decode(data: bytes, metadata: dict[str, Any], generation: int, uri: str) -> StoredBaseline:
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        statistics.ParseFromString(data)
    except DecodeError as error:
        raise TransientError(f"{uri} is not a statistics proto: {error}") from error
    recent = tuple(str(metadata.get(RECENT_KEY, "")).split())
    files = int(metadata.get(FILES_KEY) or max(len(recent), 1))
    return StoredBaseline(summary_of_statistics(statistics), files, recent, generation)
