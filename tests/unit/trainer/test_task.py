"""The run function end to end, with gs:// in memory: model, metrics, infra check, message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.core.fakes import RecordingBus
from cascade.core.job_spec import TuningSpec
from cascade.core.messages import ModelTrained
from cascade.trainer.args import TrainerArgs
from cascade.trainer.export import MANIFEST_NAME, ServingManifest
from cascade.trainer.history import TrainingHistory
from cascade.trainer.preprocessing import transform_features
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.scoring import EvaluationReport, ServingModel
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.task import TrainingResult, main, run
from cascade.transform.spec import TransformSpec
from tests.unit.trainer.builders import NEWEST_COLUMN, ProblemType, sample_table, write_run
from tests.unit.trainer.conftest import MemoryBuckets


def _probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
    """The probe in this process (the binary run below exercises the fresh-process one)."""
    return probe_model(model_dir, calls=5)


@dataclass
class TrainedRun:
    storage: TrainerStorage
    bus: RecordingBus
    spec: TransformSpec
    result: TrainingResult
    model_dir: Path

    def report(self) -> EvaluationReport:
        uri = self.result.locations.metrics_uri
        return EvaluationReport.model_validate_json(self.storage.read_bytes(uri))


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    storage, bus = TrainerStorage(MemoryBuckets()), RecordingBus()
    job_spec_uri, spec, _ = write_run(
        storage, rows=1600, slice_features=["home_ownership", "region"]
    )
    args = TrainerArgs(job_spec_uri=job_spec_uri, job_name="local-train-1")

    result = run(args, storage=storage, bus=bus)

    local = tmp_path_factory.mktemp("binary-model") / "model"
    return TrainedRun(
        storage, bus, spec, result, storage.download_tree(result.locations.model_dir, local)
    )


def test_binary_run_writes_its_per_epoch_history_beside_metrics(binary_run: TrainedRun) -> None:
    locations, storage = binary_run.result.locations, binary_run.storage

    history = TrainingHistory.model_validate_json(storage.read_bytes(locations.history_uri))

    assert locations.history_uri == f"{locations.output_dir}/history.json"
    assert history.run_id == "run-1"
    assert (
        history.epochs == binary_run.result.fit.epochs_trained == binary_run.report().epochs_trained
    )
    assert {"loss", "val_loss", "auc", "val_auc"} <= set(history.metrics)
    assert history.metrics == binary_run.result.fit.history
    assert all(len(values) == history.epochs for values in history.metrics.values())


def _raw_rows(spec: TransformSpec, count: int) -> dict[str, np.ndarray]:
    table = sample_table(count, seed=99, drift=True)
    rows: dict[str, np.ndarray] = {}
    for name in spec.feature_names:
        values = table.column(name).to_pylist()
        if spec.features[spec.feature_names.index(name)].kind == "numeric":
            rows[name] = np.array(values, dtype=np.float32)
        else:
            rows[name] = np.array([str(value) for value in values], dtype=object)
    rows["age"][:3] = [np.nan, np.inf, -1e30]
    rows["employment"][:2] = ["", "astronaut"]
    return rows


def _serve(
    model_dir: Path,
    rows: dict[str, np.ndarray],
    signature: str = "serving_default",
    **extra: np.ndarray,
) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(model_dir))
    inputs = {name: tf.constant(values) for name, values in {**rows, **extra}.items()}
    return {name: value.numpy() for name, value in loaded.signatures[signature](**inputs).items()}


def test_binary_run_writes_model_metrics_infra_check_and_publishes(binary_run: TrainedRun) -> None:
    locations, storage = binary_run.result.locations, binary_run.storage
    output_dir = "gs://cascade-artifacts/runs/run-1/training"

    report = binary_run.report()
    check = InfraCheck.model_validate_json(storage.read_bytes(locations.infra_check_uri))

    assert (locations.model_dir, locations.output_dir) == (f"{output_dir}/model", output_dir)
    assert {"saved_model.pb", MANIFEST_NAME} <= set(storage.list_tree(locations.model_dir))
    assert any(name.startswith("train/") for name in storage.list_tree(locations.tensorboard_dir))
    assert report.eval_examples == binary_run.spec.eval_rows == 400
    assert set(report.candidate.overall.metrics) >= {"loss", "accuracy", "auc", "precision"}
    assert report.candidate.overall.metrics["auc"] > 0.6  # the label depends on the features
    assert report.baseline is None
    assert report.baseline_error is None
    assert check.passed
    assert check.latency is not None
    assert check.latency.single_row_p50_ms > 0
    assert {case.name for case in check.cases} >= {
        "missing_values",
        "unseen_categories",
        "extreme_large",
    }
    assert binary_run.bus.published == [
        ModelTrained(
            dataset="credit",
            run_id="run-1",
            job_name="local-train-1",
            model_uri=locations.model_dir,
            metrics_uri=locations.metrics_uri,
        )
    ]


def test_exported_model_equals_training_preprocessing_then_model(binary_run: TrainedRun) -> None:
    """Transform parity: serving raw rows == the trained MLP on ``transform_features`` rows."""
    spec = binary_run.spec
    rows = _raw_rows(spec, 200)

    served = _serve(binary_run.model_dir, rows, "serving_features")
    trained = binary_run.result.trained.trainable(transform_features(spec, rows), training=False)

    positive = np.asarray(trained)[:, 0]
    np.testing.assert_allclose(served["probabilities"][:, 1], positive, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    assert served["classes"].tolist() == [b"1" if p >= 0.5 else b"0" for p in positive]


def test_key_passes_through_unchanged(binary_run: TrainedRun) -> None:
    rows = _raw_rows(binary_run.spec, 5)
    keys = np.array(["c-1", "", "ünï", "c-1", "x" * 300], dtype=object)

    served = _serve(binary_run.model_dir, rows, customer_id=keys)
    manifest = ServingManifest.model_validate_json(
        (binary_run.model_dir / MANIFEST_NAME).read_text()
    )

    assert served["customer_id"].tolist() == [key.encode() for key in keys]
    assert manifest.key == "customer_id"
    assert manifest.inputs["age"] == "float32"
    assert manifest.classes == ["0", "1"]
    assert manifest.outputs == ["probabilities", "class_ids", "classes"]


def test_metrics_per_slice_partition_the_eval_split(binary_run: TrainedRun) -> None:
    report = binary_run.report()
    eval_table = sample_table(1600).slice(1200)

    slices = report.candidate.slices
    ownership = {s.value: s.examples for s in slices if s.feature == "home_ownership"}
    expected = {
        str(v): n
        for v, n in zip(
            *np.unique(
                eval_table.column("home_ownership").to_numpy(zero_copy_only=False),
                return_counts=True,
            ),
            strict=True,
        )
    }
    assert ownership == expected
    assert sum(s.examples for s in slices if s.feature == "region") == 400
    assert all(set(s.metrics) >= {"loss", "accuracy"} for s in slices)


def test_baseline_is_evaluated_on_the_same_eval_split(
    binary_run: TrainedRun, tmp_path: Path
) -> None:
    storage, bus = binary_run.storage, RecordingBus()
    baseline_uri = binary_run.result.locations.model_dir
    job_spec_uri, _, _ = write_run(
        storage,
        rows=1600,
        run_id="run-2",
        seed=11,
        baseline_model_uri=baseline_uri,
        slice_features=["region"],
    )

    result = run(
        TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=_probe_here
    )

    report = result.report
    assert report is not None
    assert report.baseline is not None
    assert report.baseline_error is None
    assert report.baseline.model_uri == baseline_uri
    assert report.baseline.overall.examples == report.candidate.overall.examples == 400
    assert report.baseline.overall.metrics != report.candidate.overall.metrics
    assert {s.value for s in report.baseline.slices} == {s.value for s in report.candidate.slices}


def test_unusable_baseline_is_reported_not_fatal(
    storage: TrainerStorage, bus: RecordingBus
) -> None:
    job_spec_uri, _, _ = write_run(
        storage, rows=400, baseline_model_uri="gs://cascade-artifacts/none"
    )

    result = run(
        TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=_probe_here
    )

    assert result.report is not None
    assert result.report.baseline is None
    assert "no objects" in (result.report.baseline_error or "")
    assert len(bus.published) == 1


@pytest.mark.parametrize(
    ("problem_type", "metrics", "outputs"),
    [
        ("multiclass", {"loss", "accuracy"}, {"probabilities", "class_ids", "classes"}),
        ("regression", {"loss", "mse", "mae", "rmse"}, {"predictions"}),
    ],
)
def test_multiclass_and_regression_heads_train_and_serve(
    storage: TrainerStorage,
    bus: RecordingBus,
    tmp_path: Path,
    problem_type: ProblemType,
    metrics: set[str],
    outputs: set[str],
) -> None:
    job_spec_uri, spec, _ = write_run(storage, problem_type=problem_type, rows=800)

    result = run(
        TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=_probe_here
    )

    model_dir = storage.download_tree(result.locations.model_dir, tmp_path / "model")
    served = _serve(model_dir, _raw_rows(spec, 7), "serving_features")
    assert result.report is not None
    assert set(result.report.candidate.overall.metrics) == metrics
    assert set(served) == outputs
    assert all(len(v) == 7 for v in served.values())
    if problem_type == "multiclass":
        assert served["probabilities"].shape == (7, 3)
        assert set(served["classes"].tolist()) <= {b"rent", b"mortgage", b"own"}
    else:
        assert served["predictions"].shape == (7,)
        assert np.all(np.isfinite(served["predictions"]))
    assert len(bus.published) == 1


def test_tuning_trial_reports_its_metric_and_publishes_nothing(
    storage: TrainerStorage, bus: RecordingBus, tmp_path: Path
) -> None:
    tuning = TuningSpec(
        metric="eval_auc",
        goal="maximize",
        parameters=[{"name": "learning_rate", "type": "double", "min": 0.001, "max": 0.1}],
    )
    job_spec_uri, _, _ = write_run(storage, rows=400, tuning=tuning)
    metric_file = tmp_path / "hypertune" / "output.metrics"
    args = TrainerArgs(
        job_spec_uri=job_spec_uri,
        trial_id="3",
        hp_metric_file=str(metric_file),
        hyperparameter_overrides={"learning_rate": 0.05, "epochs": 2},
        model_dir="gs://cascade-artifacts/runs/run-1/training/3/model",
    )

    result = run(args, storage=storage, bus=bus, probe=_probe_here)

    line = json.loads(metric_file.read_text().splitlines()[-1])
    assert result.report is not None
    assert result.tuning_metric == ("eval_auc", result.report.metric("auc"))
    assert line["trial"] == "3"
    assert float(line["eval_auc"]) == pytest.approx(result.report.metric("auc"))
    assert int(line["global_step"]) == result.fit.steps > 0
    assert (
        result.locations.metrics_uri == "gs://cascade-artifacts/runs/run-1/training/3/metrics.json"
    )
    assert result.report.hyperparameters["learning_rate"] == 0.05
    assert result.report.trial_id == "3"
    assert bus.published == []


def test_a_model_that_fails_the_probe_fails_the_run(
    storage: TrainerStorage, bus: RecordingBus
) -> None:
    job_spec_uri, _, _ = write_run(storage, rows=400)

    def failing_probe(model_dir: Path, result_path: Path) -> InfraCheck:
        check = probe_model(model_dir, calls=5)
        return check.model_copy(update={"passed": False, "reasons": ["latency p95 9000 ms"]})

    with pytest.raises(BadInputError, match="load-and-probe"):
        run(TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=failing_probe)

    check_uri = "gs://cascade-artifacts/runs/run-1/training/infra_check.json"
    assert not InfraCheck.model_validate_json(storage.read_bytes(check_uri)).passed
    assert bus.published == []


def test_bad_specs_are_config_errors(storage: TrainerStorage, bus: RecordingBus) -> None:
    storage.write_bytes("gs://cascade-artifacts/job_spec.json", b'{"run_id": "r"}')

    with pytest.raises(InvalidConfigError, match="invalid job or transform spec"):
        run(
            TrainerArgs(job_spec_uri="gs://cascade-artifacts/job_spec.json"),
            storage=storage,
            bus=bus,
        )
    with pytest.raises(BadInputError, match="does not exist"):
        run(
            TrainerArgs(job_spec_uri="gs://cascade-artifacts/missing.json"),
            storage=storage,
            bus=bus,
        )


def test_entry_point_exits_non_zero_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["--learning_rate=0.1"])

    assert status == 1
    assert "--job-spec-uri is required" in capsys.readouterr().err


def test_both_models_are_scored_on_the_newest_files_which_are_no_model_input(
    binary_run: TrainedRun, tmp_path: Path
) -> None:
    storage, bus = binary_run.storage, RecordingBus()
    baseline_uri = binary_run.result.locations.model_dir
    job_spec_uri, spec, _ = write_run(
        storage,
        rows=1600,
        run_id="run-newest",
        seed=11,
        newest_rows=150,
        baseline_model_uri=baseline_uri,
        slice_features=["region"],
    )

    result = run(
        TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=bus, probe=_probe_here
    )

    report = result.report
    assert report is not None
    assert report.newest_files == ["gs://cascade-landing/credit/day-9.csv#9"]
    assert report.baseline is not None
    for metrics in (report.candidate, report.baseline):
        assert metrics.newest_files is not None
        assert metrics.newest_files.examples == 150
        assert set(metrics.newest_files.metrics) >= {"loss", "accuracy"}
    assert report.candidate.newest_files != report.baseline.newest_files
    assert {s.feature for s in report.candidate.slices} == {"region"}
    local = storage.download_tree(result.locations.model_dir, tmp_path / "model")
    model = ServingModel.load(local, result.locations.model_dir)
    assert NEWEST_COLUMN not in model.input_specs
    assert NEWEST_COLUMN not in spec.feature_names
