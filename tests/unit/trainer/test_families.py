"""The trainer's model families through the one entry point: the exported model of each
serves through the same signature, is probed, evaluated and recorded the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from cascade.core.errors import InvalidConfigError
from cascade.core.fakes import RecordingBus
from cascade.core.hyperparameters import Hyperparameters
from cascade.core.messages import ModelTrained
from cascade.trainer.args import TrainerArgs
from cascade.trainer.data import ShardReader
from cascade.trainer.export import MANIFEST_NAME, ServingManifest
from cascade.trainer.history import TrainingHistory
from cascade.trainer.model import TargetScale, build_model
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.scoring import EvaluationReport, ServingModel
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.task import run
from cascade.trainer.trees import tree_columns
from tests.unit.trainer.builders import ProblemType, make_spec, sample_table, write_run
from tests.unit.trainer.conftest import MemoryBuckets

TREES = {"num_trees": 80, "num_leaves": 15, "min_examples": 5, "early_stopping_rounds": 10}


def _probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
    return probe_model(model_dir, calls=5)


def _table_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.parquet"
    pq.write_table(sample_table(200, seed=4), path)
    return path


def _report(storage: TrainerStorage, uri: str) -> EvaluationReport:
    return EvaluationReport.model_validate_json(storage.read_bytes(uri))


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "regression"])
def test_boosted_trees_train_export_serve_and_publish(
    tmp_path: Path, problem_type: ProblemType
) -> None:
    storage, bus = TrainerStorage(MemoryBuckets()), RecordingBus()
    job_spec_uri, spec, _ = write_run(
        storage,
        problem_type=problem_type,
        rows=1200,
        model="boosted_trees",
        hyperparameters=TREES,
        slice_features=["region"],
    )

    result = run(TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus)

    report = _report(storage, result.locations.metrics_uri)
    assert report.model_family == "boosted_trees"
    assert report.hyperparameters["num_leaves"] == 15
    assert "hidden_units" not in report.hyperparameters
    assert 0 < report.epochs_trained <= 80
    assert result.infra_check is not None
    assert result.infra_check.passed
    assert isinstance(bus.published[0], ModelTrained)
    history = TrainingHistory.model_validate_json(storage.read_bytes(result.locations.history_uri))
    assert history.epochs == report.epochs_trained
    model_dir = storage.download_tree(result.locations.model_dir, tmp_path / "model")
    manifest = ServingManifest.model_validate_json((model_dir / MANIFEST_NAME).read_text())
    assert set(manifest.inputs) == set(spec.feature_names)
    # The served model answers what the booster would: the eval rows through the signature.
    eval_path = storage.download_file(spec.eval_files[0], tmp_path / "eval.parquet")
    examples = ShardReader(spec).read(eval_path)
    served = ServingModel.load(model_dir, result.locations.model_dir)
    outputs = served.predict({**examples.features, "customer_id": np.full(len(examples), "k")})
    assert (outputs["customer_id"] == b"k").all()
    columns = tree_columns(spec, examples.features)
    assert columns.shape == (len(examples), len(spec.features))
    if problem_type == "regression":
        assert np.isfinite(outputs["predictions"]).all()
    else:
        assert np.allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)


def test_auto_trains_both_keeps_the_lower_eval_loss_and_records_both(tmp_path: Path) -> None:
    storage, bus = TrainerStorage(MemoryBuckets()), RecordingBus()
    job_spec_uri, _, _ = write_run(
        storage,
        rows=1200,
        model="auto",
        epochs=2,
        hyperparameters={**TREES, "hidden_units": 8},
    )

    result = run(
        TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=_probe_here
    )

    report = _report(storage, result.locations.metrics_uri)
    assert set(report.model_selection) == {"network", "boosted_trees"}
    losses = {family: metrics["loss"] for family, metrics in report.model_selection.items()}
    assert report.model_family == min(losses, key=losses.__getitem__)
    assert report.candidate.overall.metrics["loss"] == pytest.approx(losses[report.model_family])
    logs = storage.list_tree(result.locations.tensorboard_dir)
    assert any(name.startswith("network/") for name in logs)
    assert any(name.startswith("boosted_trees/") for name in logs)


def test_a_hyperparameter_of_another_family_is_refused(tmp_path: Path) -> None:
    storage, bus = TrainerStorage(MemoryBuckets()), RecordingBus()
    job_spec_uri, _, _ = write_run(
        storage, model="boosted_trees", hyperparameters={"hidden_units": 8}
    )
    with pytest.raises(InvalidConfigError, match="does not read hidden_units"):
        run(TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=_probe_here)
    assert bus.published == []


def test_the_network_regresses_on_the_standardized_target_and_answers_in_its_units(
    tmp_path: Path,
) -> None:
    spec = make_spec("regression")
    hparams = Hyperparameters(hidden_units=8)
    rows = ShardReader(spec).read(_table_file(tmp_path)).features
    inputs = {name: tf.constant(values) for name, values in rows.items()}

    untrained = build_model(spec, hparams, TargetScale(mean=5000.0, std=10.0)).model(inputs)

    # before any training the answers sit at the target's mean, on its scale
    assert abs(float(np.mean(untrained)) - 5000.0) < 50.0
    assert float(np.std(untrained)) < 100.0
    plain = build_model(spec, hparams).model(inputs)
    assert abs(float(np.mean(plain))) < 50.0


def test_a_boosted_trees_trial_takes_its_parameters_as_flags_and_reports_its_metric(
    tmp_path: Path,
) -> None:
    storage, bus = TrainerStorage(MemoryBuckets()), RecordingBus()
    job_spec_uri, _, _ = write_run(storage, model="boosted_trees", hyperparameters=TREES)
    metric_file = tmp_path / "hypertune" / "output.metrics"
    args = TrainerArgs.from_command_line(
        [f"--job-spec-uri={job_spec_uri}", "--num_leaves=7", "--shrinkage=0.2"],
        {"CLOUD_ML_TRIAL_ID": "3", "CLOUD_ML_HP_METRIC_FILE": str(metric_file)},
    )

    result = run(args, storage=storage, bus=bus, probe=_probe_here)

    report = _report(storage, result.locations.metrics_uri)
    assert (report.hyperparameters["num_leaves"], report.hyperparameters["shrinkage"]) == (7, 0.2)
    assert report.trial_id == "3"
    assert result.tuning_metric == ("eval_loss", report.candidate.overall.metrics["loss"])
    assert "eval_loss" in metric_file.read_text()
    assert bus.published == []
