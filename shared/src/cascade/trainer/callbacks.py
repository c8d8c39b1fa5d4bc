"""Keras callbacks of the trainer: epoch logs as structured lines, TensorBoard scalars and
their upload."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from cascade.core.observability import RunLogger
from cascade.trainer.storage import TrainerStorage, join_uri

__all__ = [
    "SAME_OBJECT_WRITE_INTERVAL_S",
    "DirectoryUploader",
    "EpochLogger",
    "TensorBoardScalars",
    "UploadDirectory",
]

SAME_OBJECT_WRITE_INTERVAL_S = 1.0
"""Cloud Storage sustains about one write per second to one object name (faster writes
fail with 429); the local twin enforces the same."""


class EpochLogger(keras.callbacks.Callback):  # type: ignore[misc]
    """One log line per epoch with its metrics (instead of Keras's progress bar)."""

    def __init__(self, log: RunLogger) -> None:
        super().__init__()
        self._log = log

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {name: round(float(value), 6) for name, value in (logs or {}).items()}
        self._log.info("epoch %d: %s", epoch + 1, metrics, extra={"labels": {"epoch": epoch + 1}})


class DirectoryUploader:
    """Mirrors a local directory (TensorBoard logs) to its gs:// home, again and again:
    each call writes only the files that changed since the last, and never writes one
    object twice within ``SAME_OBJECT_WRITE_INTERVAL_S`` (it waits out the rest: epochs
    can be shorter than that, the final upload follows the last epoch at once)."""

    def __init__(
        self,
        storage: TrainerStorage,
        local_dir: Path,
        uri: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self._storage, self._local_dir, self._uri = storage, local_dir, uri
        self._clock, self._wait = clock, wait
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._written_at: dict[str, float] = {}

    def upload(self) -> None:
        if not self._local_dir.exists():
            return
        for path in sorted(self._local_dir.rglob("*")):
            if not path.is_file():
                continue
            name = path.relative_to(self._local_dir).as_posix()
            status = path.stat()
            stamp = (status.st_size, status.st_mtime_ns)
            if self._uploaded.get(name) == stamp:
                continue
            if name in self._written_at:
                remaining = self._written_at[name] + SAME_OBJECT_WRITE_INTERVAL_S - self._clock()
                if remaining > 0:
                    self._wait(remaining)
            self._storage.write_bytes(join_uri(self._uri, name), path.read_bytes())
            self._written_at[name], self._uploaded[name] = self._clock(), stamp


class UploadDirectory(keras.callbacks.Callback):  # type: ignore[misc]
    """Copies a local directory (TensorBoard logs) to its gs:// home after each epoch.

    TensorFlow's own gs:// file system does not reach the storage emulator, so the
    logs are written locally and uploaded through the same storage seam as everything
    else; on Vertex AI the TensorBoard integration then reads them from the log dir.
    """

    def __init__(self, storage: TrainerStorage, local_dir: Path, uri: str) -> None:
        super().__init__()
        self._uploader = DirectoryUploader(storage, local_dir, uri)

    def upload(self) -> None:
        self._uploader.upload()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.upload()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.upload()


class TensorBoardScalars(keras.callbacks.Callback):  # type: ignore[misc]
    """Epoch metrics as TensorBoard scalars: ``train/`` and ``validation/`` runs with
    ``epoch_<metric>`` tags, the layout Keras's own callback writes.

    Written with ``tf.summary.write`` and the scalars plugin's metadata, which needs no
    ``tensorboard`` package in the training image (Keras's callback does).
    """

    _METADATA = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self._writers = {
            run: tf.summary.create_file_writer(str(log_dir / run))
            for run in ("train", "validation")
        }

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for name, value in (logs or {}).items():
            run, metric = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            with self._writers[run].as_default():
                tf.summary.write(
                    f"epoch_{metric}",
                    tf.constant(float(value)),
                    step=epoch,
                    metadata=self._METADATA,
                )
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
