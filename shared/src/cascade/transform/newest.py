"""The newest files of a snapshot: the data the production model has never seen.

Retraining after a value skew exists so that the model learns the world the newest files
describe; a candidate is therefore also judged on the rows of those files (the
``newest_files`` slice of the trainer's metrics), beside overall and the configured
slices. The rule, decided when the transform runs:

- the newest files are the snapshot's files (``uri#generation``) that the **production
  model** — the model serving most of the dataset's traffic — was not trained on, i.e.
  that are not in the snapshot of the transform it was trained with;
- when no model serves the dataset, its transform cannot be read, or it was trained on
  every file of this snapshot: the **last accepted file** (the snapshot is in order of
  acceptance).

So with ``training.retrain_on: every_file`` and every candidate blessed, the newest file
is the run's own file; after a rejected candidate, the files its run brought stay
"newest" until a model trained on them serves.

The transform marks each shard row with whether it comes from a newest file (a boolean
column, ``TransformSpec.newest_column``). The column is not a feature: the trainer reads
only the spec's features and label for training, and the serving signature takes only
the features and the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cascade.transform.spec import SnapshotFile

__all__ = ["NEWEST_FILES_COLUMN", "NEWEST_FILES_SLICE", "newest_column_name", "newest_files"]

NEWEST_FILES_SLICE = "newest_files"
"""The slice's name in metrics.json, the evaluation record and a threshold's ``slice``."""
NEWEST_FILES_COLUMN = "__cascade_newest_file"
"""The marker column's name in the shards (underscores added if a data column has it)."""


def _pinned(file: SnapshotFile) -> tuple[str, int]:
    return file.uri, file.generation


def newest_files(
    snapshot: Sequence[SnapshotFile], production: Sequence[SnapshotFile] | None
) -> list[SnapshotFile]:
    """The files of ``snapshot`` not in ``production`` (the production model's training
    snapshot, None when unknown), else the last file of ``snapshot``."""
    if not snapshot:
        return []
    if production is not None:
        seen = {_pinned(file) for file in production}
        unseen = [file for file in snapshot if _pinned(file) not in seen]
        if unseen:
            return unseen
    return [snapshot[-1]]


def newest_column_name(columns: Iterable[str]) -> str:
    """``NEWEST_FILES_COLUMN``, lengthened until no data column has that name."""
    taken = set(columns)
    name = NEWEST_FILES_COLUMN
    while name in taken:
        name = f"_{name}"
    return name
