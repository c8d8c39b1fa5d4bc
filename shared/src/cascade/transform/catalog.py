"""Where a run's transform lives, and which transform of a dataset is the latest.

``runs/<run_id>/transform/transform.json`` is a run's spec. The dataset's pointer
``datasets/<d>/latest_transform.json`` names the transform whose snapshot covers the
most accepted data; it only ever moves forward (more files, or as many files but a
newer transform), updated with a generation precondition so concurrent transforms
cannot move it back. A retrain without a transform of its own trains on it.
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
    return f"{DatasetPaths(dataset).root}/latest_transform.json"


def read_transform(store: ArtifactStore, run_id: str) -> TransformSpec | None:
    found = store.read_model(transform_spec_name(run_id), TransformSpec)
    return None if found is None else found[0]


def latest_transform(store: ArtifactStore, dataset: str) -> TransformPointer | None:
    found = store.read_model(latest_transform_name(dataset), TransformPointer)
    return None if found is None else found[0]


def advance_latest_transform(store: ArtifactStore, pointer: TransformPointer, dataset: str) -> bool:
    """Point the dataset at ``pointer`` unless a transform covering more is already there."""
    return store.update(
        latest_transform_name(dataset),
        TransformPointer,
        lambda current: pointer if current is None or pointer.supersedes(current) else None,
    ).written
