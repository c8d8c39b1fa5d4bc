"""The custom family: the user's module builds (or trains) the model; Cascade keeps the
rest — transform, fit, export with the key, evaluation, probe — and a broken module fails
the run with its error summarised."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.core.fakes import RecordingBus
from cascade.core.job_spec import ModelModule, TrainingFailure
from cascade.trainer.args import TrainerArgs
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.scoring import EvaluationReport, ServingModel
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.task import record_failure, run
from cascade.trainer.user_module import UserModuleError
from tests.unit.trainer.builders import BUCKET, ProblemType, write_run
from tests.unit.trainer.conftest import MemoryBuckets

MODULE_URI = f"gs://{BUCKET}/datasets/credit/models/model.py"

WIDE_AND_DEEP = """
import keras

HYPERPARAMETERS = {"deep_units": 12}


def build_model(context):
    deep = keras.layers.Dense(context.params["deep_units"], activation="relu")(context.inputs)
    both = keras.layers.Concatenate()([context.inputs, deep])
    activation = {"binary": "sigmoid", "multiclass": "softmax"}.get(context.problem_type)
    head = keras.layers.Dense(context.output_units, activation=activation)(both)
    return keras.Model(context.inputs, head, name="wide_and_deep")
"""

OWN_TRAINING = """
import keras


def run(context):
    vector = context.preprocessing(context.raw_inputs)
    output = keras.layers.Dense(context.output_units, activation="sigmoid")(vector)
    model = keras.Model(context.raw_inputs, output)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.fit(context.train_dataset, validation_data=context.eval_dataset,
              **{**context.fit_arguments, "epochs": 2})
    return model
"""


def _probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
    return probe_model(model_dir, calls=3)


def _with_module(
    source: str, *, problem_type: ProblemType = "binary", sha256: str | None = None
) -> tuple[TrainerStorage, str]:
    buckets = MemoryBuckets()
    storage = TrainerStorage(buckets)
    data = textwrap.dedent(source).encode()
    storage.write_bytes(MODULE_URI, data)
    stored = buckets(BUCKET).read("datasets/credit/models/model.py")
    assert stored is not None
    pin = ModelModule(
        uri=MODULE_URI,
        generation=stored.generation,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
    )
    job_spec_uri, _, _ = write_run(
        storage,
        problem_type=problem_type,
        rows=600,
        model="custom",
        model_module=pin.model_dump(),
        epochs=2,
        hyperparameters={"learning_rate": 0.01},
    )
    return storage, job_spec_uri


def _run(storage: TrainerStorage, job_spec_uri: str, bus: RecordingBus | None = None) -> object:
    return run(
        TrainerArgs(job_spec_uri=job_spec_uri),
        storage=storage,
        bus=bus if bus is not None else RecordingBus(),
        probe=_probe_here,
    )


@pytest.mark.parametrize("problem_type", ["binary", "multiclass", "regression"])
def test_a_module_with_its_own_architecture_trains_serves_and_is_recorded(
    tmp_path: Path, problem_type: ProblemType
) -> None:
    storage, job_spec_uri = _with_module(WIDE_AND_DEEP, problem_type=problem_type)

    result = run(TrainerArgs(job_spec_uri=job_spec_uri), storage=storage, bus=RecordingBus())

    assert result.infra_check is not None
    assert result.infra_check.passed
    report = EvaluationReport.model_validate_json(storage.read_bytes(result.locations.metrics_uri))
    assert report.model_family == "custom"
    assert report.model_module is not None
    assert report.model_module.startswith(MODULE_URI + "#")
    assert report.hyperparameters["deep_units"] == 12
    assert report.hyperparameters["learning_rate"] == 0.01
    model_dir = storage.download_tree(result.locations.model_dir, tmp_path / "model")
    served = ServingModel.load(model_dir, result.locations.model_dir)
    assert "customer_id" in served.output_names
    layers = [layer.name for layer in result.trained.trainable.layers]
    assert result.trained.trainable.name == "wide_and_deep"
    assert any(name.startswith("concatenate") for name in layers)


def test_a_module_that_trains_its_own_model_is_exported_and_evaluated() -> None:
    storage, job_spec_uri = _with_module(OWN_TRAINING)

    result = _run(storage, job_spec_uri)

    report = EvaluationReport.model_validate_json(
        storage.read_bytes(result.locations.metrics_uri)  # type: ignore[attr-defined]
    )
    assert report.model_family == "custom"
    assert report.epochs_trained == 2
    assert 0.0 <= report.candidate.overall.metrics["auc"] <= 1.0


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("def build_model(context)\n    return None\n", r"import failed: SyntaxError.*line 1"),
        ("import not_a_module_anywhere\n", r"import failed: ModuleNotFoundError.*line 1"),
        ("x = 1\n", "defines neither build_model\\(context\\) nor run\\(context\\)"),
        (
            "def build_model(context):\n    raise ValueError('no such layer: foo')\n",
            r"build_model\(context\) failed: ValueError: no such layer: foo \(line 2: raise",
        ),
        ("def build_model(context):\n    return 42\n", "returned int, not a keras.Model"),
        (
            "import keras\n"
            "def build_model(context):\n"
            "    return keras.Model(context.inputs, keras.layers.Dense(3)(context.inputs))\n",
            r"output has shape \(2, 3\); the head needs \(batch, 1\)",
        ),
        ("HYPERPARAMETERS = {'dropout': 0.5}\ndef build_model(c):\n    pass\n", "Cascade already"),
        ("HYPERPARAMETERS = {'layers': [1, 2]}\ndef build_model(c):\n    pass\n", "numbers, str"),
    ],
)
def test_a_broken_module_fails_the_run_with_its_error_summarised(source: str, reason: str) -> None:
    storage, job_spec_uri = _with_module(source)
    bus = RecordingBus()

    with pytest.raises(UserModuleError, match=reason) as raised:
        _run(storage, job_spec_uri, bus)

    assert MODULE_URI in str(raised.value)
    assert bus.published == []


def test_a_module_whose_bytes_changed_since_the_pin_is_refused() -> None:
    storage, job_spec_uri = _with_module(WIDE_AND_DEEP, sha256="0" * 64)
    with pytest.raises(UserModuleError, match=r"SHA-256 is [0-9a-f]{64}, not the pinned 0000"):
        _run(storage, job_spec_uri)


def test_a_model_that_breaks_the_serving_contract_is_caught_by_the_probe() -> None:
    logits = (
        "import keras\n"
        "def build_model(context):\n"
        "    scaled = keras.layers.Dense(1, kernel_initializer='ones')(context.inputs)\n"
        "    return keras.Model(context.inputs, keras.layers.Lambda(lambda x: x * 1e3)(scaled))\n"
    )
    storage, job_spec_uri = _with_module(logits)
    bus = RecordingBus()
    with pytest.raises(BadInputError, match="load-and-probe check"):
        _run(storage, job_spec_uri, bus)
    assert bus.published == []


def test_the_trainer_records_its_own_reason_beside_the_outputs() -> None:
    storage, job_spec_uri = _with_module("def build_model(context):\n    raise KeyError('x')\n")
    args = TrainerArgs(job_spec_uri=job_spec_uri, job_name="local-job-7")
    with pytest.raises(UserModuleError) as raised:
        run(args, storage=storage, bus=RecordingBus(), probe=_probe_here)

    uri = record_failure(storage, args, "permanent", str(raised.value))

    assert uri == f"gs://{BUCKET}/runs/run-1/training/failure.json"
    failure = TrainingFailure.model_validate_json(storage.read_bytes(uri))
    assert failure.job == "local-job-7"
    assert "build_model(context) failed: KeyError: 'x' (line 2" in failure.error
    assert record_failure(storage, None, "permanent", "no args yet") is None


def test_a_hyperparameter_the_module_does_not_declare_is_named_as_such() -> None:
    storage, job_spec_uri = _with_module(WIDE_AND_DEEP)
    with pytest.raises(InvalidConfigError, match="wide_units are not Cascade's and the model mod"):
        run(
            TrainerArgs(job_spec_uri=job_spec_uri, hyperparameter_overrides={"wide_units": 3}),
            storage=storage,
            bus=RecordingBus(),
            probe=_probe_here,
        )
