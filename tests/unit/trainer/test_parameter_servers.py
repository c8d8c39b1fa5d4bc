"""The parameter-server network in one process (the default strategy): its inputs are the
other network's transform, its serving model is the trained network de-sharded, early
stopping keeps the best epoch, and the task runs it for a job spec with ``sharding``.
(``test_parameter_server_cluster`` runs it on a real chief / worker / ps cluster.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cascade.core.errors import InvalidConfigError
from cascade.core.fakes import RecordingBus
from cascade.core.hyperparameters import Hyperparameters
from cascade.core.job_spec import ParameterServerSpec
from cascade.core.messages import ModelTrained
from cascade.core.observability import run_logger
from cascade.trainer.args import ClusterConfig, TrainerArgs
from cascade.trainer.data import ShardReader, download_shards
from cascade.trainer.export import MANIFEST_NAME
from cascade.trainer.model import TargetScale
from cascade.trainer.parameter_servers import (
    ShardedTraining,
    encode_examples,
    shard_devices,
    train_sharded_network,
)
from cascade.trainer.preprocessing import feature_width, transform_features
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.strategy import choose_strategy
from cascade.trainer.task import run
from cascade.transform.spec import NumericTransform, TransformSpec
from tests.unit.trainer.builders import ProblemType, write_run

SHARDING = ParameterServerSpec(embedding_dim=4)


def _train(
    storage: TrainerStorage,
    tmp_path: Path,
    problem_type: ProblemType,
    **hyperparameters: float,
) -> tuple[TransformSpec, list[Path], ShardedTraining]:
    _, spec, _ = write_run(storage, problem_type=problem_type, rows=800)
    train = download_shards(storage, spec.train_files, tmp_path, "train")
    evaluation = download_shards(storage, spec.eval_files, tmp_path, "eval")
    hparams = Hyperparameters.model_validate(
        {"hidden_units": 8, "learning_rate": 0.05, "batch_size": 64, "epochs": 2, **hyperparameters}
    )
    target = TargetScale(660.0, 70.0) if problem_type == "regression" else None
    trained = train_sharded_network(
        choose_strategy(None),
        spec,
        hparams,
        SHARDING,
        train_files=train,
        eval_files=evaluation,
        log=run_logger("test"),
        target=target,
    )
    return spec, evaluation, trained


def test_the_inputs_are_the_other_networks_transform(
    storage: TrainerStorage, tmp_path: Path
) -> None:
    _, spec, _ = write_run(storage, rows=200)
    examples = ShardReader(spec).read(download_shards(storage, spec.eval_files, tmp_path, "e")[0])

    numeric, ids, targets = encode_examples(spec, examples)

    one_hot = transform_features(spec, examples.features)
    numeric_width = sum(feature_width(f) for f in spec.features if isinstance(f, NumericTransform))
    np.testing.assert_array_equal(numeric, one_hot[:, :numeric_width])
    column = numeric_width
    categorical = [f for f in spec.features if not isinstance(f, NumericTransform)]
    assert [f.name for f in spec.features[-len(categorical) :]] == [f.name for f in categorical]
    for index, feature in enumerate(categorical):
        width = feature_width(feature)
        np.testing.assert_array_equal(
            one_hot[:, column : column + width].argmax(axis=1), ids[:, index]
        )
        column += width
    np.testing.assert_array_equal(targets, examples.targets)


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "regression"])
def test_the_serving_model_answers_as_the_trained_network(
    storage: TrainerStorage, tmp_path: Path, problem_type: ProblemType
) -> None:
    spec, evaluation, trained = _train(storage, tmp_path, problem_type)
    examples = ShardReader(spec).read(evaluation[0])

    numeric, ids, _ = encode_examples(spec, examples)
    network_answers = trained.network.predict(numeric, ids).numpy()
    serving_answers = trained.trained.model(dict(examples.features), training=False).numpy()

    np.testing.assert_allclose(serving_answers, network_answers, rtol=1e-5, atol=1e-5)
    assert trained.fit.history["loss"][-1] < trained.fit.history["loss"][0]
    assert set(shard_devices(trained.network)) == {
        f.name for f in spec.features if not isinstance(f, NumericTransform)
    }


def test_early_stopping_keeps_the_best_epochs_weights(
    storage: TrainerStorage, tmp_path: Path
) -> None:
    spec, evaluation, trained = _train(
        storage,
        tmp_path,
        "binary",
        learning_rate=3.0,
        dropout=0.0,
        epochs=6,
        early_stopping_patience=6,
    )
    examples = ShardReader(spec).read(evaluation[0])
    numeric, ids, targets = encode_examples(spec, examples)

    probabilities = np.clip(trained.network.predict(numeric, ids).numpy().ravel(), 1e-7, 1 - 1e-7)
    log_loss = -np.mean(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities))

    losses = trained.fit.history["val_loss"]
    assert losses[-1] > min(losses)  # the last epoch was not the best: restoring matters
    assert log_loss == pytest.approx(min(losses), rel=1e-4)


def test_the_task_trains_a_sharded_job_spec_in_one_process(
    storage: TrainerStorage, bus: RecordingBus
) -> None:
    job_spec_uri, _, job_spec = write_run(
        storage,
        rows=600,
        epochs=1,
        workers={"replica_count": 1},
        parameter_servers={"replica_count": 2},
        sharding=SHARDING.model_dump(),
    )

    def probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
        return probe_model(model_dir, calls=2)

    result = run(TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=probe_here)

    assert result.sharded is not None
    assert result.infra_check is not None
    assert result.infra_check.passed
    manifest = json.loads(storage.read_bytes(f"{job_spec.model_dir}/{MANIFEST_NAME}"))
    assert manifest["signatures"] == ["serving_default", "serving_features"]
    assert manifest["key"] == "customer_id"
    assert [m.model_uri for m in bus.of_type(ModelTrained)] == [job_spec.model_dir]


CLUSTER = {
    "chief": ["127.0.0.1:1"],
    "worker": ["127.0.0.1:2"],
    "ps": ["127.0.0.1:3", "127.0.0.1:4"],
}


@pytest.mark.parametrize(("task_type", "index"), [("worker", 0), ("ps", 0), ("ps", 1)])
def test_worker_and_ps_tasks_only_serve(task_type: str, index: int) -> None:
    cluster = ClusterConfig(CLUSTER, task_type, index)

    assert cluster.serves_only
    assert not cluster.is_chief
    with pytest.raises(InvalidConfigError, match="only serves the chief"):
        run(TrainerArgs(job_spec_uri="unused", cluster=cluster), storage=None, bus=None)  # type: ignore[arg-type]


def test_the_chief_coordinates() -> None:
    cluster = ClusterConfig.from_tf_config(
        json.dumps({"cluster": CLUSTER, "task": {"type": "chief", "index": 0}})
    )

    assert cluster.is_chief
    assert not cluster.serves_only
    assert cluster.parameter_servers == CLUSTER["ps"]
    assert cluster.full_cluster == CLUSTER
    assert cluster.training_cluster == {"chief": CLUSTER["chief"], "worker": CLUSTER["worker"]}


@pytest.mark.parametrize("index", [2, -1, 10**12])
def test_a_ps_task_outside_its_cluster_is_refused(index: int) -> None:
    with pytest.raises(InvalidConfigError, match=f"ps:{index} is not in its cluster"):
        ClusterConfig.from_tf_config(
            json.dumps({"cluster": CLUSTER, "task": {"type": "ps", "index": index}})
        )


def test_a_ps_cluster_needs_the_job_specs_sharding_and_workers() -> None:
    chief = ClusterConfig(CLUSTER, "chief", 0)
    with pytest.raises(InvalidConfigError, match="no parameter_servers / sharding"):
        choose_strategy(chief)
    no_workers = ClusterConfig({"chief": CLUSTER["chief"], "ps": CLUSTER["ps"]}, "chief", 0)
    with pytest.raises(InvalidConfigError, match=r"needs a chief .* and workers"):
        choose_strategy(no_workers, sharding=SHARDING)
