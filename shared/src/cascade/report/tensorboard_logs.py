"""A run's TensorBoard event files, copied from the artifacts bucket to a local folder.

The trainer writes them to ``AIP_TENSORBOARD_LOG_DIR``: in Vertex AI's layout
(``cascade.core.vertex_job_env``) ``runs/<run_id>/training/logs/`` and, when tuning,
each trial's ``runs/<run_id>/training/<trial id>/logs/``. Object names are data:
the local folder is built from the run id, validated, and each object's name relative to
the training folder, checked part by part; a name with ``..``, ``.``, an empty part, a
backslash, a drive or a control character is refused, never joined into a path.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cascade.core.errors import BadRequestError, PermanentError
from cascade.core.store import ArtifactStore
from cascade.core.vertex_job_env import LOG_FOLDER
from cascade.jobs.records import training_folder

__all__ = [
    "LOG_FOLDER",
    "RUN_ID_PATTERN",
    "TensorBoardLogs",
    "UnsafeObjectNameError",
    "check_run_id",
    "download_tensorboard_logs",
    "local_log_path",
    "tensorboard_command",
]

RUN_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}-r?[0-9a-f]{16}$")
"""``<dataset>-<16 hex>`` (an upload's run) or ``<dataset>-r<16 hex>`` (a request's)."""

_UNSAFE_PART = re.compile(r"[\\:\x00-\x1f\x7f]")
_TRIAL_ID = re.compile(r"^[0-9]+$")


class UnsafeObjectNameError(PermanentError):
    """An object name that cannot safely become a local path."""


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it has the shape Cascade gives run ids, else raise."""
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise BadRequestError(
            f"invalid run id {run_id!r}: expected <dataset>-<16 hex digits> "
            "(or <dataset>-r<16 hex digits>), as `cascade status` lists them"
        )
    return run_id


def _log_folder_index(parts: list[str]) -> int | None:
    """Where ``logs`` is in a name: the job's ``logs/…`` or a trial's ``<trial id>/logs/…``."""
    if len(parts) > 1 and parts[0] == LOG_FOLDER:
        return 0
    if len(parts) > 2 and _TRIAL_ID.fullmatch(parts[0]) and parts[1] == LOG_FOLDER:
        return 1
    return None


def local_log_path(relative_name: str) -> PurePosixPath | None:
    """Where an object (named relative to the training folder) goes under the run's folder.

    ``logs/train/events...`` -> ``train/events...``;
    ``3/logs/train/events...`` (trial 3) -> ``3/train/events...``.
    None for objects that are not in a TensorBoard log folder (the model, metrics...).
    Raises UnsafeObjectNameError for a log name that is not a plain relative path.
    """
    parts = relative_name.split("/")
    folder = _log_folder_index(parts)
    if folder is None:
        return None
    for part in parts:
        if part in ("", ".", "..") or _UNSAFE_PART.search(part):
            raise UnsafeObjectNameError(f"refusing object name {relative_name!r}: part {part!r}")
    return PurePosixPath(*parts[:folder], *parts[folder + 1 :])


@dataclass
class TensorBoardLogs:
    """The local copy: ``directory`` holds ``files``; ``refused`` names objects not copied."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _copy(artifacts: ArtifactStore, name: str, target: Path) -> bool:
    stored = artifacts.read(name)
    if stored is None:  # deleted since the listing
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(stored.data)
    return True


def download_tensorboard_logs(
    artifacts: ArtifactStore, run_id: str, destination_root: Path
) -> TensorBoardLogs:
    """Copy ``run_id``'s event files to ``destination_root/<run_id>/`` (replacing a copy)."""
    directory = destination_root / check_run_id(run_id)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    root = directory.resolve()
    logs = TensorBoardLogs(directory)
    prefix = f"{training_folder(run_id)}/"
    for info in artifacts.list_objects(prefix):
        try:
            relative = local_log_path(info.name.removeprefix(prefix))
        except UnsafeObjectNameError:
            logs.refused.append(info.name)
            continue
        if relative is None:
            continue
        target = directory.joinpath(*relative.parts)
        if not target.resolve().is_relative_to(root):  # a link planted in the folder
            logs.refused.append(info.name)
        elif _copy(artifacts, info.name, target):
            logs.files.append(target)
    return logs


def tensorboard_command(logdir: Path, port: int) -> list[str]:
    """TensorBoard on loopback only, from this Python's environment when it has one."""
    beside_python = Path(sys.executable).with_name("tensorboard")
    executable = str(beside_python) if beside_python.exists() else shutil.which("tensorboard") or ""
    if not executable:
        raise FileNotFoundError(
            "tensorboard is not installed: `.venv/bin/pip install -r requirements.txt`"
        )
    return [executable, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
