"""Keras callbacks of the trainer: epoch logs as structured lines, TensorBoard scalars and
their upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from cascade.core.observability import RunLogger
from cascade.trainer.storage import TrainerStorage

__all__ = ["EpochLogger", "TensorBoardScalars", "UploadDirectory"]


class EpochLogger(keras.callbacks.Callback):  # type: ignore[misc]
    """One log line per epoch with its metrics (instead of Keras's progress bar)."""

    def __init__(self, log: RunLogger) -> None:
        super().__init__()
        self._log = log

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {name: round(float(value), 6) for name, value in (logs or {}).items()}
        self._log.info("epoch %d: %s", epoch + 1, metrics, extra={"labels": {"epoch": epoch + 1}})


class UploadDirectory(keras.callbacks.Callback):  # type: ignore[misc]
    """Copies a local directory (TensorBoard logs) to its gs:// home after each epoch.

    TensorFlow's own gs:// file system does not reach the storage emulator, so the
    logs are written locally and uploaded through the same storage seam as everything
    else; on Vertex AI the TensorBoard integration then reads them from the log dir.
    """

    def __init__(self, storage: TrainerStorage, local_dir: Path, uri: str) -> None:
        super().__init__()
        self._storage, self._local_dir, self._uri = storage, local_dir, uri

    def upload(self) -> None:
        if self._local_dir.exists():
            self._storage.upload_tree(self._local_dir, self._uri)

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
