"""The data snapshot: which accepted files (at which generation) a run trains on.

Built from the accepted-files manifests (``datasets/<d>/accepted/*.json``), ordered by
acceptance, each file pinned to the generation that was validated, and stored once per
run (create-only) as ``runs/<run_id>/transform/snapshot.json``: a resumed or re-run
transform reads exactly the same files. A manifest whose generation no longer exists
(the object was overwritten without versioning, or deleted) is left out and listed
under ``skipped``; its replacement, if validated, has a manifest of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import BinaryIO, Protocol

from pydantic import BaseModel, ConfigDict, Field

from cascade.core.errors import BadInputError
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore, ObjectInfo, read_concurrently
from cascade.transform.spec import SnapshotFile
from cascade.validation.manifest import AcceptedFile

__all__ = [
    "DataSnapshot",
    "GcsObjectOpener",
    "ObjectOpener",
    "SkippedFile",
    "accepted_files",
    "build_snapshot",
    "load_or_create_snapshot",
    "split_gs_uri",
]


class SkippedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str
    generation: int
    reason: str


class DataSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    run_id: str
    files: list[SnapshotFile]
    skipped: list[SkippedFile] = Field(default_factory=list)
    created_at: datetime

    @property
    def rows(self) -> int:
        return sum(file.rows for file in self.files)


class ObjectOpener(Protocol):
    """Reads one generation of an object (the landing bucket's, in production)."""

    def stat(self, uri: str, generation: int) -> ObjectInfo | None:
        """The object's size and ``Content-Encoding``, or None when that generation
        does not exist."""
        ...

    def open(self, uri: str, generation: int) -> AbstractContextManager[BinaryIO]: ...


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` as (bucket, name)."""
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise BadInputError(f"not a gs://bucket/object URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


class GcsObjectOpener:
    """Opens pinned generations through the artifact stores of their buckets, streaming."""

    def __init__(self, stores: Callable[[str], ArtifactStore]) -> None:
        self._stores = stores

    def stat(self, uri: str, generation: int) -> ObjectInfo | None:
        bucket, name = split_gs_uri(uri)
        return self._stores(bucket).stat(name, generation=generation)

    def open(self, uri: str, generation: int) -> AbstractContextManager[BinaryIO]:
        bucket, name = split_gs_uri(uri)
        return self._stores(bucket).open_read(name, generation=generation)


def accepted_files(store: ArtifactStore, dataset: str) -> list[AcceptedFile]:
    """Every accepted-file manifest of ``dataset``, in order of acceptance (read
    concurrently: one round trip each)."""
    names = [
        name
        for name in store.list_names(DatasetPaths(dataset).accepted_prefix)
        if name.endswith(".json")
    ]

    def read(name: str) -> AcceptedFile | None:
        found = store.read_model(name, AcceptedFile)
        return None if found is None else found[0]

    manifests = [
        manifest
        for manifest in read_concurrently(read, names, name="accepted-read")
        if manifest is not None
    ]
    return sorted(manifests, key=lambda manifest: (manifest.accepted_at, manifest.file_id))


def build_snapshot(
    store: ArtifactStore, opener: ObjectOpener, *, dataset: str, run_id: str, now: datetime
) -> DataSnapshot:
    """The accepted files whose generation still exists (each looked up concurrently),
    and those whose generation is gone, with why."""
    manifests = accepted_files(store, dataset)
    found = read_concurrently(
        lambda manifest: opener.stat(manifest.uri, manifest.generation),
        manifests,
        name="landed-stat",
    )
    files: list[SnapshotFile] = []
    skipped: list[SkippedFile] = []
    for manifest, info in zip(manifests, found, strict=True):
        if info is None:
            skipped.append(
                SkippedFile(
                    uri=manifest.uri,
                    generation=manifest.generation,
                    reason="this generation no longer exists (overwritten or deleted)",
                )
            )
            continue
        files.append(
            SnapshotFile(
                uri=manifest.uri,
                generation=manifest.generation,
                rows=manifest.num_examples,
                record_fields=manifest.record_fields,
            )
        )
    return DataSnapshot(
        dataset=dataset, run_id=run_id, files=files, skipped=skipped, created_at=now
    )


def load_or_create_snapshot(
    store: ArtifactStore,
    name: str,
    opener: ObjectOpener,
    *,
    dataset: str,
    run_id: str,
    now: datetime,
) -> DataSnapshot:
    """The run's snapshot: the stored one, or a new one stored create-only."""
    found = store.read_model(name, DataSnapshot)
    if found is not None:
        return found[0]
    snapshot = build_snapshot(store, opener, dataset=dataset, run_id=run_id, now=now)
    if store.create(name, snapshot.model_dump_json(indent=2).encode()) is None:
        stored = store.read_model(name, DataSnapshot)
        if stored is not None:
            return stored[0]
    return snapshot
