"""TensorBoard logs mirrored to gs:// after every epoch: only changed files are written,
and one object never twice within a second (Cloud Storage's same-object write limit)."""

from __future__ import annotations

import os
from pathlib import Path

from cascade.trainer.callbacks import SAME_OBJECT_WRITE_INTERVAL_S, DirectoryUploader
from cascade.trainer.storage import TrainerStorage
from tests.unit.trainer.conftest import MemoryBuckets

URI = "gs://arts/runs/r1/training/logs"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _generations(buckets: MemoryBuckets) -> dict[str, int]:
    """Each object's generation: how often it was written."""
    store = buckets.stores["arts"]
    found = {name: store.read(name) for name in store.list_names("runs/r1/training/logs/")}
    return {name.rsplit("logs/", 1)[1]: s.generation for name, s in found.items() if s}


def test_only_changed_files_are_written_and_never_twice_within_the_interval(
    buckets: MemoryBuckets, storage: TrainerStorage, tmp_path: Path
) -> None:
    clock = Clock()
    uploader = DirectoryUploader(storage, tmp_path, URI, clock=clock, wait=clock.wait)
    _write(tmp_path / "train" / "events", "epoch 1", 1)
    _write(tmp_path / "validation" / "events", "epoch 1", 1)

    uploader.upload()  # both new: written, no wait
    first = _generations(buckets)
    clock.now += 0.25
    _write(tmp_path / "train" / "events", "epoch 1 2", 2)
    uploader.upload()  # train changed 0.25 s later: waits 0.75 s; validation unchanged

    assert clock.waits == [SAME_OBJECT_WRITE_INTERVAL_S - 0.25]
    assert storage.read_bytes(f"{URI}/train/events") == b"epoch 1 2"
    second = _generations(buckets)
    assert second["validation/events"] == first["validation/events"]  # not written again
    assert second["train/events"] != first["train/events"]
    clock.now += 5
    _write(tmp_path / "validation" / "events", "epoch 1 2", 3)
    uploader.upload()  # long after: no wait
    third = _generations(buckets)
    uploader.upload()  # nothing changed: nothing written, no wait

    assert _generations(buckets) == third
    assert clock.waits == [SAME_OBJECT_WRITE_INTERVAL_S - 0.25]
    assert storage.read_bytes(f"{URI}/validation/events") == b"epoch 1 2"


def test_a_missing_directory_uploads_nothing(storage: TrainerStorage, tmp_path: Path) -> None:
    DirectoryUploader(storage, tmp_path / "absent", URI).upload()

    assert storage.list_tree(URI) == []
