"""``cascade train DATASET --local``: an experiment on the dataset's latest transform,
trained in this process, nothing deployed or published; clear errors, no tracebacks."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cascade.cli import experiment, main
from cascade.core.errors import BadInputError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.model_modules import experiment_module_name, push_model_module
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import push_pipeline_config
from cascade.localcloud import control
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.serving.state import DeployedVersion, ServingState
from cascade.trainer.args import TrainerArgs
from cascade.trainer.scoring import EvaluationReport
from cascade.trainer.storage import TrainerStorage
from cascade.transform.catalog import TransformPointer, latest_transform_name
from tests.unit.trainer.builders import write_run
from tests.unit.trainer.conftest import MemoryBuckets

DATASET = "credit"
TRANSFORM_RUN = "credit-0123456789abcdef"
MODULE_SOURCE = b"def build_model(context):\n    raise NotImplementedError\n"


class Cloud:
    """The artifacts bucket and the trainer's storage, in memory."""

    def __init__(self) -> None:
        self.buckets = MemoryBuckets()
        self.storage = TrainerStorage(self.buckets)

    @property
    def artifacts(self) -> MemoryArtifactStore:
        return self.buckets("cascade-artifacts")

    def transformed(self, rows: int = 400) -> None:
        """A tiny transform of the sample data, the dataset's latest."""
        _, spec, _ = write_run(self.storage, rows=rows, shards=1, run_id=TRANSFORM_RUN)
        pointer = TransformPointer(
            run_id=TRANSFORM_RUN,
            transform_uri=f"gs://cascade-artifacts/runs/{TRANSFORM_RUN}/transform/transform.json",
            files=1,
            rows=spec.train_rows + spec.eval_rows,
            created_at=datetime(2026, 11, 27, tzinfo=UTC),
        )
        self.artifacts.write_json(latest_transform_name(DATASET), pointer)

    def config(self, text: str) -> None:
        push_pipeline_config(self.artifacts, DATASET, text.encode(), where="pipeline.yaml")


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cloud:
    fake = Cloud()
    monkeypatch.setattr(experiment, "open_stores", lambda settings: (fake.artifacts, fake.storage))
    state = LocalCloudSettings(state_dir=tmp_path / "state").absolute()
    monkeypatch.setattr(main, "_local", lambda: state)
    monkeypatch.setattr(control, "status", lambda local: "running")
    return fake


def _train(*args: str) -> Result:
    result = CliRunner().invoke(main.cli, ["train", DATASET, *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _text(result: Result) -> str:
    return " ".join(result.output.split())


def test_a_local_experiment_trains_the_latest_transform_and_deploys_nothing(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.transformed()
    cloud.config("training:\n  model: boosted_trees\n  hyperparameters: {shrinkage: 0.1}\n")
    objects_before = dict(cloud.artifacts.objects)

    result = _train("--local", "--model", "network", "--set", "epochs=1", "--set", "hidden_units=8")

    text = _text(result)
    assert result.exit_code == 0, result.output
    (output_dir,) = (tmp_path / "state" / "experiments" / DATASET).iterdir()
    assert output_dir.name.startswith("exp-")
    spec = TrainingJobSpec.model_validate_json((output_dir / "job_spec.json").read_bytes())
    assert spec.run_id == output_dir.name
    assert spec.model == "network"
    assert spec.hyperparameters == {"epochs": 1, "hidden_units": 8}  # shrinkage left out
    assert spec.tuning is None
    assert spec.transform_spec_uri.endswith(f"runs/{TRANSFORM_RUN}/transform/transform.json")
    assert (output_dir / "model" / "saved_model.pb").is_file()
    report = EvaluationReport.model_validate_json((output_dir / "metrics.json").read_bytes())
    assert report.epochs_trained == 1
    assert report.run_id == spec.run_id
    assert "loss" in report.candidate.overall.metrics
    assert json.loads((output_dir / "infra_check.json").read_text())["passed"] is True
    # the summary: family, epochs, metrics, where things are, the baseline
    assert "trained model network: 1 epochs" in text
    assert "left out the config's shrinkage" in text
    assert f"on the transform of run {TRANSFORM_RUN}" in text
    assert "baseline none (no model serves credit)" in text
    assert "auc" in text
    assert f"metrics {output_dir}/metrics.json" in text
    assert f"model {output_dir}/model" in text
    assert "nothing was deployed or published" in text
    # nothing stored in the bucket: no run record, no model, no message's side effects
    assert cloud.artifacts.objects.keys() == objects_before.keys()


def test_a_local_experiment_is_compared_with_the_deployed_model(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.transformed()
    cloud.config("training:\n  model: network\n  hyperparameters: {hidden_units: 8}\n")
    first = _train("--local", "--set", "epochs=1", "--output", str(tmp_path / "first"))
    assert first.exit_code == 0, first.output
    deployed = "gs://cascade-artifacts/models/credit/1"
    cloud.storage.upload_tree(tmp_path / "first" / "model", deployed)
    cloud.artifacts.write_json(DatasetPaths(DATASET).serving, _serving(deployed))

    second = _train("--local", "--set", "epochs=1", "--output", str(tmp_path / "second"))

    assert second.exit_code == 0, second.output
    spec = TrainingJobSpec.model_validate_json((tmp_path / "second" / "job_spec.json").read_bytes())
    assert spec.baseline_model_uri == deployed
    report = EvaluationReport.model_validate_json(
        (tmp_path / "second" / "metrics.json").read_bytes()
    )
    assert report.baseline is not None
    assert report.baseline_error is None
    text = _text(second)
    assert f"baseline {deployed}" in text
    assert "deployed" in second.output.split("eval metrics")[1]  # the table's column
    loss = f"{report.baseline.overall.metrics['loss']:.4g}"
    assert loss in second.output.split("eval metrics")[1]


def _serving(model_uri: str) -> ServingState:
    at = datetime(2026, 11, 27, tzinfo=UTC)
    version = DeployedVersion(
        version="1",
        run_id="credit-r0123456789abcdef",
        model_uri=model_uri,
        state="serving",
        deployed_at=at,
    )
    return ServingState(
        dataset=DATASET,
        target="local",
        endpoint=DATASET,
        versions=[version],
        traffic={"1": 100},
        updated_at=at,
    )


def test_without_transformed_data_it_says_so_and_exits_1(cloud: Cloud, tmp_path: Path) -> None:
    result = _train("--local")

    assert result.exit_code == 1
    assert "credit has no transformed data yet" in _text(result)
    assert "Traceback" not in result.output
    assert not (tmp_path / "state" / "experiments").exists()


def test_without_a_local_cloud_it_says_so_and_exits_1(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "status", lambda local: None)

    result = _train("--local")

    assert result.exit_code == 1
    assert "local cloud is not running" in _text(result)


class Recorder:
    """Stands in for the trainer: keeps the job spec it was given, then fails."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.specs: list[TrainingJobSpec] = []

    def __call__(self, args: TrainerArgs, storage: TrainerStorage) -> None:
        self.specs.append(
            TrainingJobSpec.model_validate_json(storage.read_bytes(args.job_spec_uri))
        )
        raise self.error


def test_a_module_file_is_stored_by_its_hash_pinned_and_reused(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.transformed()
    module = tmp_path / "mine.py"
    module.write_bytes(MODULE_SOURCE)
    trainer = Recorder(BadInputError("build_model raised NotImplementedError", uri="mine.py"))
    monkeypatch.setattr(experiment, "train_in_process", trainer)

    first = _train("--local", "--model-module", str(module), "--output", str(tmp_path / "a"))
    second = _train("--local", "--model-module", str(module), "--output", str(tmp_path / "b"))

    assert first.exit_code == second.exit_code == 1
    assert "training failed (permanent)" in _text(first)
    assert "NotImplementedError" in _text(first)
    assert "Traceback" not in first.output
    name = f"datasets/{DATASET}/{experiment_module_name(MODULE_SOURCE)}"
    stored = cloud.artifacts.read(name)
    assert stored is not None
    assert stored.data == MODULE_SOURCE
    specs = trainer.specs
    assert [spec.model for spec in specs] == ["custom", "custom"]
    assert specs[0].model_module == specs[1].model_module  # the same object, not a new one
    assert specs[0].model_module is not None
    assert specs[0].model_module.uri == f"gs://cascade-artifacts/{name}"
    assert specs[0].model_module.generation == stored.generation
    assert specs[0].model_module.sha256 == hashlib.sha256(MODULE_SOURCE).hexdigest()
    assert f"{specs[0].model_module.uri}#{stored.generation}" in _text(first)
    assert specs[0].output_dir == str((tmp_path / "a").resolve())


def test_model_custom_without_a_file_pins_the_configs_module(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.transformed()
    cloud.config("training:\n  model: custom\n  model_module: models/churn.py\n")
    pushed = push_model_module(cloud.artifacts, DATASET, "models/churn.py", MODULE_SOURCE)
    trainer = Recorder(RuntimeError("boom"))
    monkeypatch.setattr(experiment, "train_in_process", trainer)

    result = _train("--local", "--output", str(tmp_path / "out"))

    (spec,) = trainer.specs
    assert spec.model_module == pushed
    assert result.exit_code == 1
    assert "training failed: RuntimeError: boom" in _text(result)
    assert "Traceback" not in result.output
    assert "Traceback" in (tmp_path / "out" / "error.txt").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "network", "--model-module", "{module}"],
            "--model-module trains model custom",
        ),
        (["--model", "custom"], "model custom needs --model-module FILE"),
        (["--model", "network", "--set", "shrinkage=0.1"], "model network does not read shrinkage"),
        (["--set", "epochs"], "use --set NAME=VALUE"),
        (["--set", "../x=1"], "String should match pattern"),
        (["--model", "network", "--set", "epochs=0"], "invalid hyperparameters"),
        (["--model-module", "{binary}"], "is not UTF-8 text"),
    ],
    ids=[
        "module-and-family",
        "custom-without-module",
        "foreign-name",
        "no-value",
        "bad-name",
        "bad-value",
        "binary-module",
    ],
)
def test_what_cannot_run_is_refused_with_one_clear_line(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    cloud.transformed()
    (tmp_path / "module.py").write_bytes(MODULE_SOURCE)
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe\x00")
    trainer = Recorder(RuntimeError("must not train"))
    monkeypatch.setattr(experiment, "train_in_process", trainer)
    paths = {"module": str(tmp_path / "module.py"), "binary": str(tmp_path / "binary.py")}

    result = _train("--local", *[arg.format(**paths) for arg in args])

    assert result.exit_code == 1, result.output
    assert message in _text(result)
    assert "Traceback" not in result.output
    assert trainer.specs == []


def test_without_local_a_request_id_is_required_and_experiment_options_are_refused(
    cloud: Cloud,
) -> None:
    missing = _train()
    local_only = _train("--request-id", "r1", "--model", "network")
    both = _train("--local", "--request-id", "r1")

    assert missing.exit_code == local_only.exit_code == both.exit_code == 2
    assert "--request-id is required" in missing.output
    assert "--model: only with --local" in local_only.output
    assert "no --request-id" in both.output


def test_an_experiment_run_id_is_one_safe_segment_and_never_a_pipeline_run_id() -> None:
    from cascade.core.runs import SYSTEM_RUN_ID_PATTERN

    run_id = experiment.experiment_run_id(datetime(2026, 11, 27, 12, 30, 5, tzinfo=UTC), "a1b2c3")

    assert run_id == "exp-20261127-123005-a1b2c3"
    assert not SYSTEM_RUN_ID_PATTERN.fullmatch(run_id)


CUSTOM_MODULE = b"""import keras


def build_model(context):
    hidden = keras.layers.Dense(8, activation="relu")(context.inputs)
    activation = "sigmoid" if context.output_units == 1 else "softmax"
    outputs = keras.layers.Dense(context.output_units, activation=activation)(hidden)
    return keras.Model(context.inputs, outputs)
"""


def test_a_module_file_trains_in_the_experiment(cloud: Cloud, tmp_path: Path) -> None:
    cloud.transformed()
    module = tmp_path / "small_net.py"
    module.write_bytes(CUSTOM_MODULE)

    result = _train(
        "--local",
        "--model-module",
        str(module),
        "--set",
        "epochs=1",
        "--output",
        str(tmp_path / "o"),
    )

    assert result.exit_code == 0, result.output
    assert "trained model custom: 1 epochs" in _text(result)
    assert (tmp_path / "o" / "model" / "saved_model.pb").is_file()


def test_a_broken_module_fails_the_experiment_with_its_error_and_no_traceback(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.transformed()
    module = tmp_path / "broken.py"
    module.write_bytes(b"def build_model(context):\n    raise ValueError('no layers yet')\n")

    result = _train("--local", "--model-module", str(module), "--output", str(tmp_path / "o"))

    assert result.exit_code == 1
    text = _text(result)
    assert "training failed (permanent)" in text
    assert "no layers yet" in text
    assert "Traceback" not in result.output
