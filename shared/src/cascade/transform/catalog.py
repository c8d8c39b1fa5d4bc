"""Where a run's transform lives, and which transform of a dataset is the latest.

``runs/<run_id>/transform/transform.json`` is a run's spec. Each finished transform also
creates (create-only, once) a pointer ``datasets/<d>/transforms/<rank>.json`` whose name
sorts the transform covering the most accepted data first (most files, then newest):
``latest_transform`` is the first name of one listing page. No object of the dataset is
rewritten per file, so a burst of files never meets Cloud Storage's limit of about one
write a second to one object name (docs/design.md, "Many files per dataset"); a pointer
only adds, so concurrent transforms cannot move "latest" back. A dataset pointer written
by an earlier version (``datasets/<d>/latest_transform.json``, read-modify-written) is
still read, and the better of the two wins. A retrain without a transform of its own
trains on the latest.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.store import ArtifactStore
from cascade.transform.spec import TransformSpec

__all__ = [
    "TransformPointer",
    "advance_latest_transform",
    "latest_transform",
    "latest_transform_name",
    "pointer_name",
    "pointers_prefix",
    "read_transform",
    "snapshot_name",
    "transform_folder",
    "transform_spec_name",
]


class TransformPointer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    transform_uri: str
    files: int
    rows: int
    created_at: datetime

    def supersedes(self, other: TransformPointer) -> bool:
        return (self.files, self.created_at) > (other.files, other.created_at)


def transform_folder(run_id: str) -> str:
    return RunPaths(run_id).step_dir("transform")


def transform_spec_name(run_id: str) -> str:
    return f"{transform_folder(run_id)}/transform.json"


def snapshot_name(run_id: str) -> str:
    return f"{transform_folder(run_id)}/snapshot.json"


def latest_transform_name(dataset: str) -> str:
    """The single pointer object of earlier versions (read, never written)."""
    return f"{DatasetPaths(dataset).root}/latest_transform.json"


def pointers_prefix(dataset: str) -> str:
    return f"{DatasetPaths(dataset).root}/transforms/"


_MAX_FILES = 10**10
_MAX_MILLIS = 10**14


def pointer_name(dataset: str, pointer: TransformPointer) -> str:
    """``transforms/<files, inverted>-<created ms, inverted>-<run id>.json``: names sort
    as ``supersedes`` orders pointers, best first."""
    files = _MAX_FILES - 1 - min(pointer.files, _MAX_FILES - 1)
    millis = _MAX_MILLIS - 1 - int(pointer.created_at.timestamp() * 1000)
    return f"{pointers_prefix(dataset)}{files:010d}-{millis:014d}-{pointer.run_id}.json"


def read_transform(store: ArtifactStore, run_id: str) -> TransformSpec | None:
    found = store.read_model(transform_spec_name(run_id), TransformSpec)
    return None if found is None else found[0]


def latest_transform(store: ArtifactStore, dataset: str) -> TransformPointer | None:
    """The pointer that supersedes all others: the first listed, or the earlier
    versions' single object when it covers more. Two small requests."""
    best = None
    for name in store.list_names(pointers_prefix(dataset), max_results=1):
        found = store.read_model(name, TransformPointer)
        best = None if found is None else found[0]
    legacy = store.read_model(latest_transform_name(dataset), TransformPointer)
    if legacy is not None and (best is None or legacy[0].supersedes(best)):
        return legacy[0]
    return best


def advance_latest_transform(store: ArtifactStore, pointer: TransformPointer, dataset: str) -> bool:
    """Record ``pointer`` among the dataset's transforms (create-only; a repeat of the
    same pointer writes nothing). True when this call created it."""
    payload = pointer.model_dump_json(indent=2).encode()
    return store.create(pointer_name(dataset, pointer), payload) is not None
