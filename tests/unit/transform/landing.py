"""An in-memory landing bucket with generations, and accepted datasets built on it.

``accept`` does what validation leaves behind for transform: the object (at a
generation), its accepted-file manifest, and the dataset's merged baseline statistics
(computed by validation's own code from the same bytes).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore, ObjectInfo
from cascade.core.validation_config import ValidationConfig
from cascade.transform.snapshot import split_gs_uri
from cascade.validation.manifest import AcceptedFile
from cascade.validation.names import file_format_of
from cascade.validation.source import DataSource
from cascade.validation.statistics import (
    compute_statistics,
    statistics_proto,
    summary_of_statistics,
)
from cascade.validation.tfmd import statistics_pb2

LANDING = "cascade-landing"


class MemoryLanding:
    """``ObjectOpener`` over a dict of (uri, generation) → bytes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, int], bytes] = {}
        self.opened: list[tuple[str, int]] = []

    def put(self, name: str, data: bytes, generation: int) -> str:
        uri = f"gs://{LANDING}/{name}"
        self.objects[(uri, generation)] = data
        return uri

    def stat(self, uri: str, generation: int) -> ObjectInfo | None:
        data = self.objects.get((uri, generation))
        return None if data is None else ObjectInfo(uri, generation, len(data), None)

    def open(self, uri: str, generation: int) -> AbstractContextManager[BinaryIO]:
        self.opened.append((uri, generation))

        @contextmanager
        def reader() -> Iterator[BinaryIO]:
            yield io.BytesIO(self.objects[(uri, generation)])

        return reader()


def accept(
    store: ArtifactStore,
    landing: MemoryLanding,
    dataset: str,
    file_name: str,
    data: bytes,
    *,
    generation: int,
    order: int = 0,
) -> AcceptedFile:
    """Land ``data`` and record it as accepted, merging its statistics into the baseline."""
    uri = landing.put(f"{dataset}/{file_name}", data, generation)
    _, name = split_gs_uri(uri)
    source = DataSource(
        uri=uri, file_format=file_format_of(name), size=len(data), open=lambda: io.BytesIO(data)
    )
    config = ValidationConfig()
    summary = compute_statistics(source, config)
    paths = DatasetPaths(dataset)
    stored = store.read(paths.baseline_stats)
    if stored is not None:
        previous = statistics_pb2.DatasetFeatureStatisticsList()
        previous.ParseFromString(stored.data)
        summary = summary_of_statistics(previous).merged(summary, config.max_tracked_values)
    proto = statistics_proto(summary.compacted(config.max_tracked_values), config, name="baseline")
    store.write(paths.baseline_stats, proto.SerializeToString())
    file_id = f"{dataset}-file{order:03d}"
    manifest = AcceptedFile(
        file_id=file_id,
        run_id=file_id,
        uri=uri,
        generation=generation,
        num_examples=summary_rows(data),
        stats_uri=f"gs://x/{file_id}/stats.pb",
        schema_uri="gs://x/schema.pbtxt",
        accepted_at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=order),
    )
    store.write_json(paths.accepted_manifest(file_id), manifest)
    return manifest


def summary_rows(data: bytes) -> int:
    return max(data.decode().count("\n") - 1, 0)


def write_pipeline_config(store: ArtifactStore, dataset: str, text: str) -> None:
    store.write(DatasetPaths(dataset).pipeline_config, text.encode(), content_type="text/yaml")
