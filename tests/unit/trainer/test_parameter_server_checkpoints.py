"""Checkpoints of the parameter-server loop, in one process (the default strategy):
a run that dies between epochs resumes at the epoch after its last checkpoint, a finished
one is not trained again, the manager keeps a bounded number, and a checkpoint of
another run (a changed vocabulary) or an unreadable one is refused, naming it.
(``test_parameter_server_cluster`` kills and restarts a real cluster's chief.)"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cascade.core.errors import InvalidConfigError
from cascade.core.fakes import RecordingBus
from cascade.core.hyperparameters import Hyperparameters
from cascade.core.job_spec import ParameterServerSpec
from cascade.core.observability import run_logger
from cascade.trainer.args import TrainerArgs
from cascade.trainer.data import download_shards
from cascade.trainer.parameter_servers import (
    CHECKPOINT_FOLDER,
    ShardedTraining,
    train_sharded_network,
)
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.strategy import choose_strategy
from cascade.trainer.task import run
from cascade.transform.spec import TransformSpec, VocabularyTransform
from tests.unit.trainer.builders import write_run

SHARDING = ParameterServerSpec(embedding_dim=4)
ROWS = 600
CLUSTER_JOB = {
    "workers": {"replica_count": 1},
    "parameter_servers": {"replica_count": 2},
    "sharding": SHARDING.model_dump(),
}


class ChiefDiedError(Exception):
    """The chief's process ending between two epochs (before the second is saved)."""


def _inputs(
    storage: TrainerStorage, tmp_path: Path
) -> tuple[TransformSpec, list[Path], list[Path]]:
    _, spec, _ = write_run(storage, rows=ROWS)
    train = download_shards(storage, spec.train_files, tmp_path / "data", "train")
    evaluation = download_shards(storage, spec.eval_files, tmp_path / "data", "eval")
    return spec, train, evaluation


def _train(
    spec: TransformSpec,
    files: tuple[list[Path], list[Path]],
    checkpoint_dir: Path,
    *,
    epochs: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> ShardedTraining:
    hparams = Hyperparameters.model_validate(
        {"hidden_units": 8, "learning_rate": 0.05, "batch_size": 64, "epochs": epochs}
    )
    return train_sharded_network(
        choose_strategy(None),
        spec,
        hparams,
        SHARDING,
        train_files=files[0],
        eval_files=files[1],
        log=run_logger("cascade.trainer.test"),
        on_epoch=on_epoch,
        checkpoint_dir=str(checkpoint_dir),
    )


def _die_at(epoch: int, seen: list[dict[str, float]]) -> Callable[[int, dict[str, float]], None]:
    def on_epoch(index: int, logs: dict[str, float]) -> None:
        seen.append(logs)
        if index == epoch:
            raise ChiefDiedError

    return on_epoch


def _weights(trained: ShardedTraining) -> list[np.ndarray]:
    return [np.asarray(variable) for variable in trained.network.variables_in_order()]


def test_a_run_that_died_resumes_after_its_last_checkpoint(
    storage: TrainerStorage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec, train, evaluation = _inputs(storage, tmp_path)
    checkpoints = tmp_path / "checkpoints"
    first: list[dict[str, float]] = []
    with pytest.raises(ChiefDiedError):
        _train(spec, (train, evaluation), checkpoints, epochs=3, on_epoch=_die_at(1, first))

    resumed: list[dict[str, float]] = []
    with caplog.at_level(logging.INFO, logger="cascade.trainer.test"):
        result = _train(
            spec, (train, evaluation), checkpoints, epochs=3, on_epoch=_die_at(-1, resumed)
        )

    assert "resuming at epoch 2" in caplog.text
    assert len(resumed) == 2  # epochs 2 and 3; epoch 1 came from the checkpoint
    history = result.fit.history
    assert history["loss"][0] == pytest.approx(first[0]["loss"])
    assert history["val_loss"][0] == pytest.approx(first[0]["val_loss"])
    assert history["loss"][1:] == pytest.approx([logs["loss"] for logs in resumed])
    assert result.fit.epochs_trained == 3
    train_rows = int(result.fit.steps)  # one step per batch of 64, three epochs
    assert train_rows == 3 * -(-450 // 64)
    # bounded: the newest two of epochs 1, 2, 3
    folder = checkpoints / CHECKPOINT_FOLDER
    assert sorted(p.name for p in folder.glob("*.index")) == ["epoch-2.index", "epoch-3.index"]


def test_a_finished_run_restarted_is_not_trained_again(
    storage: TrainerStorage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec, train, evaluation = _inputs(storage, tmp_path)
    checkpoints = tmp_path / "checkpoints"
    finished = _train(spec, (train, evaluation), checkpoints, epochs=2)

    epochs: list[dict[str, float]] = []
    with caplog.at_level(logging.INFO, logger="cascade.trainer.test"):
        again = _train(
            spec, (train, evaluation), checkpoints, epochs=2, on_epoch=_die_at(-1, epochs)
        )

    assert epochs == []
    assert "resuming at epoch 3" in caplog.text
    assert again.fit == finished.fit
    for restored, trained in zip(_weights(again), _weights(finished), strict=True):
        np.testing.assert_array_equal(restored, trained)


def _with_vocabulary(spec: TransformSpec, vocabulary: list[str]) -> TransformSpec:
    features = [
        feature.model_copy(update={"vocabulary": vocabulary})
        if isinstance(feature, VocabularyTransform) and feature.name == "employment"
        else feature
        for feature in spec.features
    ]
    return spec.model_copy(update={"features": features})


@pytest.mark.parametrize(
    "vocabulary",
    [
        ["salaried", "self_employed", "unemployed", "retired", "student"],  # a larger table
        ["retired", "unemployed", "self_employed", "salaried"],  # same shape, other rows
    ],
)
def test_a_checkpoint_of_another_vocabulary_is_refused(
    storage: TrainerStorage, tmp_path: Path, vocabulary: list[str]
) -> None:
    spec, train, evaluation = _inputs(storage, tmp_path)
    checkpoints = tmp_path / "checkpoints"
    _train(spec, (train, evaluation), checkpoints, epochs=1)
    folder = checkpoints / CHECKPOINT_FOLDER
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    with pytest.raises(InvalidConfigError, match="was written by another run") as refused:
        _train(_with_vocabulary(spec, vocabulary), (train, evaluation), checkpoints, epochs=1)

    assert str(folder / "epoch-1") in str(refused.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # not overwritten


def test_an_unreadable_checkpoint_is_refused_naming_it(
    storage: TrainerStorage, tmp_path: Path
) -> None:
    spec, train, evaluation = _inputs(storage, tmp_path)
    checkpoints = tmp_path / "checkpoints"
    _train(spec, (train, evaluation), checkpoints, epochs=1)
    index = checkpoints / CHECKPOINT_FOLDER / "epoch-1.index"
    index.write_bytes(b"\x00not a checkpoint index" * 8)

    with pytest.raises(InvalidConfigError, match="cannot be read") as refused:
        _train(spec, (train, evaluation), checkpoints, epochs=1)

    assert str(checkpoints / CHECKPOINT_FOLDER / "epoch-1") in str(refused.value)


def _probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
    return probe_model(model_dir, calls=2)


def test_the_task_checkpoints_to_the_jobs_checkpoint_dir(
    storage: TrainerStorage, bus: RecordingBus, tmp_path: Path
) -> None:
    job_spec_uri, _, _ = write_run(storage, rows=ROWS, epochs=1, **CLUSTER_JOB)
    args = TrainerArgs(job_spec_uri=job_spec_uri, checkpoint_dir=f"{tmp_path}/checkpoints/")

    run(args, storage=storage, bus=bus, probe=_probe_here)

    folder = tmp_path / "checkpoints" / CHECKPOINT_FOLDER
    assert sorted(p.name for p in folder.glob("*.index")) == ["epoch-1.index"]


def test_on_the_storage_emulator_the_task_does_not_checkpoint(
    storage: TrainerStorage, bus: RecordingBus, caplog: pytest.LogCaptureFixture
) -> None:
    """TensorFlow cannot reach the emulator: as the Keras path, no backups there."""
    job_spec_uri, _, job_spec = write_run(storage, rows=ROWS, epochs=1, **CLUSTER_JOB)
    checkpoint_dir = f"{job_spec.output_dir}/checkpoints/"
    args = TrainerArgs(
        job_spec_uri=job_spec_uri, checkpoint_dir=checkpoint_dir, storage_emulated=True
    )

    with caplog.at_level(logging.INFO, logger="cascade.trainer"):
        result = run(args, storage=storage, bus=bus, probe=_probe_here)

    assert f"not checkpointing to {checkpoint_dir}" in caplog.text
    assert result.fit.epochs_trained == 1
    assert storage.list_tree(checkpoint_dir) == []
