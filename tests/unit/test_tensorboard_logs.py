"""`cascade tensorboard`: event files copied to a folder named by the run id, names checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.core.errors import BadRequestError
from cascade.core.fakes import MemoryArtifactStore
from cascade.report.tensorboard_logs import (
    UnsafeObjectNameError,
    check_run_id,
    download_tensorboard_logs,
    local_log_path,
    tensorboard_command,
)

RUN = "credit-0123456789abcdef"
TRAINING = f"runs/{RUN}/training"


def _store(*names: str) -> MemoryArtifactStore:
    store = MemoryArtifactStore("cascade-artifacts")
    for name in names:
        store.write(name, f"events of {name}".encode())
    return store


def _relative(files: list[Path], root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in files}


def test_event_files_of_the_run_and_its_trials_are_copied_without_the_log_folder(
    tmp_path: Path,
) -> None:
    store = _store(
        f"{TRAINING}/logs/train/events.out.tfevents.1.vm.1.0.v2",
        f"{TRAINING}/logs/validation/events.out.tfevents.1.vm.1.1.v2",
        f"{TRAINING}/3/logs/train/events.out.tfevents.2.vm.2.0.v2",
        f"{TRAINING}/model/saved_model.pb",
        f"{TRAINING}/metrics.json",
        "runs/credit-ffffffffffffffff/training/logs/train/events.other",
    )

    logs = download_tensorboard_logs(store, RUN, tmp_path)

    assert logs.directory == tmp_path / RUN
    assert _relative(logs.files, logs.directory) == {
        "train/events.out.tfevents.1.vm.1.0.v2",
        "validation/events.out.tfevents.1.vm.1.1.v2",
        "3/train/events.out.tfevents.2.vm.2.0.v2",
    }
    copied = logs.directory / "train/events.out.tfevents.1.vm.1.0.v2"
    assert copied.read_bytes() == (
        f"events of {TRAINING}/logs/train/events.out.tfevents.1.vm.1.0.v2".encode()
    )
    assert logs.refused == []


@pytest.mark.parametrize(
    "name",
    [
        "logs/../../../../outside",
        "logs/train/../../escape",
        "logs//absolute",
        "logs/./events",
        "logs/train\\..\\..\\escape",
        "logs/C:/events",
        "logs/train/ev\x00ents",
    ],
)
def test_unsafe_object_names_are_refused_and_nothing_leaves_the_run_folder(
    tmp_path: Path, name: str
) -> None:
    store = _store(f"{TRAINING}/{name}", f"{TRAINING}/logs/train/events.ok")
    destination = tmp_path / "tensorboard"

    logs = download_tensorboard_logs(store, RUN, destination)

    assert logs.refused == [f"{TRAINING}/{name}"]
    assert _relative(logs.files, logs.directory) == {"train/events.ok"}
    written = {path for path in tmp_path.rglob("*") if path.is_file()}
    assert written == {logs.directory / "train/events.ok"}


def test_a_new_download_replaces_the_previous_copy(tmp_path: Path) -> None:
    stale = tmp_path / RUN / "train" / "events.stale"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")

    logs = download_tensorboard_logs(_store(f"{TRAINING}/logs/a/events.new"), RUN, tmp_path)

    assert not stale.exists()
    assert _relative(logs.files, logs.directory) == {"a/events.new"}


@pytest.mark.parametrize(
    "run_id",
    ["../credit-0123456789abcdef", "credit-0123456789abcdef/..", "..", "", "/etc", "Credit-01"],
)
def test_run_ids_that_are_not_run_ids_are_refused_before_any_path_is_built(
    tmp_path: Path, run_id: str
) -> None:
    with pytest.raises(BadRequestError, match="invalid run id"):
        download_tensorboard_logs(_store(), run_id, tmp_path)

    assert list(tmp_path.iterdir()) == []


def test_run_ids_of_uploads_and_requests_are_accepted() -> None:
    assert check_run_id("credit-0123456789abcdef") == "credit-0123456789abcdef"
    assert check_run_id("my_data-2-r0123456789abcdef") == "my_data-2-r0123456789abcdef"


def test_local_log_path_skips_objects_outside_log_folders() -> None:
    assert local_log_path("model/saved_model.pb") is None
    assert local_log_path("logs") is None
    assert local_log_path("model/logs/e") is None  # only <base>/logs/ and <trial>/logs/
    assert str(local_log_path("2/logs/validation/e")) == "2/validation/e"
    with pytest.raises(UnsafeObjectNameError):
        local_log_path("logs/../e")


def test_tensorboard_listens_on_loopback_only(tmp_path: Path) -> None:
    command = tensorboard_command(tmp_path, 6007)

    assert command[1:] == ["--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", "6007"]
    assert Path(command[0]).name == "tensorboard"
