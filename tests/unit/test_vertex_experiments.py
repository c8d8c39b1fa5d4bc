"""Vertex AI Experiments from the trainer: names, when it is on, the SDK calls (spec'd on
google-cloud-aiplatform's own functions), and that no failure of them fails training.

The calls are checked against the SDK's samples (googleapis/python-aiplatform,
samples/model-builder/experiment_tracking/: create_experiment_sample.py,
resume_experiment_run_sample.py, log_time_series_metrics_sample.py) and against the
pinned SDK's signatures, which ``autospec`` enforces."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from google.api_core import exceptions as gexc
from google.cloud import aiplatform
from google.cloud.aiplatform_v1 import Execution
from pydantic import ValidationError

from cascade.core.fakes import RecordingBus
from cascade.core.settings import Settings
from cascade.jobs.vertex_runner import VERTEX_TENSORBOARD_ENV, experiments_environment
from cascade.trainer.args import TrainerArgs
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.task import run
from cascade.trainer.vertex_experiments import (
    MAX_NAME_CHARS,
    VertexExperiments,
    experiment_name,
    experiment_names,
    resource_id,
    run_name,
)
from tests.unit.trainer.builders import write_run
from tests.unit.trainer.conftest import MemoryBuckets

PROJECT = "acme-ml"
REGION = "europe-west4"
TENSORBOARD = f"projects/{PROJECT}/locations/{REGION}/tensorboards/1234567890"
RUN_ID = "sales-0123456789abcdef"
VERTEX_ID = re.compile(r"[a-z][a-z0-9-]*")
SDK_FUNCTIONS = ("init", "start_run", "log_params", "log_time_series_metrics", "log_metrics")
TREES = {"num_trees": 12, "num_leaves": 7, "min_examples": 5, "early_stopping_rounds": 5}
HOSTILE_DATASETS = [
    "Sales_EU",
    "sales_eu",
    "sales-eu",
    "a" * 200,
    "a" * 199 + "b",
    "ÜBER daten",
    "über-daten",
    "123",
    "-",
    "",
    "x/../../y",
    "a\nb",
    "DROP TABLE;",
]


@dataclass
class Vertex:
    """The SDK's module-level functions, each replaced by an autospec of itself."""

    init: mock.MagicMock
    start_run: mock.MagicMock
    log_params: mock.MagicMock
    log_time_series_metrics: mock.MagicMock
    log_metrics: mock.MagicMock
    end_run: mock.MagicMock

    def calls(self) -> list[str]:
        return [
            name
            for name in (*SDK_FUNCTIONS, "end_run")
            for _ in range(getattr(self, name).call_count)
        ]


@pytest.fixture
def vertex() -> Iterator[Vertex]:
    names = (*SDK_FUNCTIONS, "end_run")
    patches = [mock.patch.object(aiplatform, name, autospec=True) for name in names]
    mocks = [patch.start() for patch in patches]
    try:
        yield Vertex(*mocks)
    finally:
        for patch in patches:
            patch.stop()


def _experiments(timeout_s: float = 30.0) -> VertexExperiments:
    return VertexExperiments(
        project=PROJECT, region=REGION, tensorboard=TENSORBOARD, timeout_s=timeout_s
    )


def _cloud_settings(**fields: Any) -> Settings:
    values: dict[str, Any] = {
        "project": PROJECT,
        "region": REGION,
        "vertex_tensorboard": TENSORBOARD,
        **fields,
    }
    return Settings(**values)


@pytest.fixture
def cloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No local-cloud variable leaks in from the test process's own environment."""
    for name in (
        "STORAGE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
        "CASCADE_JOB_SERVICE_URL",
        "CASCADE_LOCAL_IDENTITY",
        VERTEX_TENSORBOARD_ENV,
    ):
        monkeypatch.delenv(name, raising=False)


# -- names ---------------------------------------------------------------------------------


def test_valid_names_are_kept_as_they_are() -> None:
    assert experiment_name("sales") == "cascade-sales"
    assert run_name(RUN_ID) == RUN_ID
    assert run_name(RUN_ID, "3") == f"{RUN_ID}-trial-3"


@pytest.mark.parametrize("dataset", HOSTILE_DATASETS)
def test_hostile_dataset_names_become_valid_vertex_ids(dataset: str) -> None:
    names = experiment_names(dataset, f"{dataset}-r0123456789abcdef", "12")

    for name in (names.experiment, names.run):
        assert VERTEX_ID.fullmatch(name), name
        assert 4 <= len(name) <= MAX_NAME_CHARS
    # The SDK's run context id <experiment>-<run> and its "-tb-run" artifact fit in 128.
    assert len(f"{names.experiment}-{names.run}-tb-run") <= 128
    assert experiment_names(dataset, f"{dataset}-r0123456789abcdef", "12") == names


def test_hostile_names_stay_distinct() -> None:
    experiments = {experiment_name(dataset) for dataset in HOSTILE_DATASETS}
    runs = {run_name(f"{dataset}-r0123456789abcdef") for dataset in HOSTILE_DATASETS}
    trials = {run_name(RUN_ID, trial) for trial in ("1", "2", "10", "1_0", "1-0")}

    assert len(experiments) == len(HOSTILE_DATASETS)
    assert len(runs) == len(HOSTILE_DATASETS)
    assert len(trials) == 5
    assert run_name(RUN_ID) not in trials


def test_a_changed_name_ends_in_a_hash_of_the_whole_input() -> None:
    long_a, long_b = resource_id("a" * 200), resource_id("a" * 199 + "b")

    assert long_a != long_b
    assert long_a.startswith("a" * 40)
    assert resource_id("Sales") != "sales"
    assert resource_id("9lives").startswith("x9lives-")


# -- on only in the cloud ------------------------------------------------------------------


@pytest.mark.usefixtures("cloud_env")
def test_off_without_a_tensorboard_setting() -> None:
    assert Settings().vertex_tensorboard is None
    assert VertexExperiments.from_settings(Settings()) is None


@pytest.mark.usefixtures("cloud_env")
@pytest.mark.parametrize(
    "local",
    [
        {"storage_emulator_host": "127.0.0.1:4443"},
        {"pubsub_emulator_host": "127.0.0.1:8085"},
        {"job_service_url": "http://127.0.0.1:9000"},
    ],
)
def test_off_in_the_local_cloud_even_with_a_tensorboard(local: dict[str, str]) -> None:
    assert VertexExperiments.from_settings(_cloud_settings(**local)) is None


@pytest.mark.usefixtures("cloud_env")
def test_off_when_the_tensorboard_is_in_another_region(caplog: pytest.LogCaptureFixture) -> None:
    settings = _cloud_settings(region="us-central1")

    with caplog.at_level(logging.WARNING, logger="cascade.trainer"):
        assert VertexExperiments.from_settings(settings) is None

    assert "not in region us-central1" in caplog.text


@pytest.mark.usefixtures("cloud_env")
def test_on_in_the_cloud() -> None:
    experiments = VertexExperiments.from_settings(_cloud_settings())

    assert experiments is not None
    assert (experiments.project, experiments.region, experiments.tensorboard) == (
        PROJECT,
        REGION,
        TENSORBOARD,
    )


@pytest.mark.usefixtures("cloud_env")
@pytest.mark.parametrize(
    "value",
    [
        "",
        "1234567890",
        f"{TENSORBOARD}/experiments/x",
        f"projects/{PROJECT}/locations/{REGION}/tensorboards/../1",
        f"{TENSORBOARD}\n",
        f"projects/{PROJECT}/locations/{REGION}/endpoints/1",
    ],
)
def test_a_malformed_tensorboard_setting_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(vertex_tensorboard=value)


@pytest.mark.usefixtures("cloud_env")
def test_job_environment_carries_the_tensorboard_exactly_when_set() -> None:
    assert experiments_environment(Settings()) == {}
    assert experiments_environment(_cloud_settings()) == {VERTEX_TENSORBOARD_ENV: TENSORBOARD}
    # The trainer reads the same variable back into the same setting.
    assert VERTEX_TENSORBOARD_ENV.removeprefix("CASCADE_").lower() in Settings.model_fields


@pytest.mark.usefixtures("cloud_env")
def test_the_trainer_reads_the_job_environment_back(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in experiments_environment(_cloud_settings()).items():
        monkeypatch.setenv(name, value)

    assert Settings().vertex_tensorboard == TENSORBOARD


# -- the calls -----------------------------------------------------------------------------


def test_a_run_logs_params_series_and_metrics_then_ends(vertex: Vertex) -> None:
    experiments = _experiments()

    experiments.start(
        dataset="sales",
        run_id=RUN_ID,
        trial_id=None,
        params={"learning_rate": 0.01, "layers": 2, "optimizer": "adam", "batch_norm": True},
    )
    experiments.log_history(
        {"loss": [0.7, 0.5, float("nan")], "val_loss": [0.8, 0.6, 0.55], "auc": [0.6, 0.7]}
    )
    experiments.log_metrics({"auc": 0.81, "loss": 0.42, "log_loss": float("inf")})
    experiments.end()

    vertex.init.assert_called_once_with(
        project=PROJECT,
        location=REGION,
        experiment="cascade-sales",
        experiment_tensorboard=TENSORBOARD,
    )
    vertex.start_run.assert_called_once_with(run=RUN_ID, resume=False)
    vertex.log_params.assert_called_once_with(
        {"learning_rate": 0.01, "layers": 2, "optimizer": "adam", "batch_norm": "true"}
    )
    assert vertex.log_time_series_metrics.call_args_list == [
        mock.call({"loss": 0.7, "val_loss": 0.8, "auc": 0.6}, step=1),
        mock.call({"loss": 0.5, "val_loss": 0.6, "auc": 0.7}, step=2),
        mock.call({"val_loss": 0.55}, step=3),
    ]
    vertex.log_metrics.assert_called_once_with({"auc": 0.81, "loss": 0.42})
    vertex.end_run.assert_called_once_with(state=Execution.State.COMPLETE)
    assert vertex.calls()[:2] == ["init", "start_run"]


def test_a_tuning_trial_is_a_run_of_its_own(vertex: Vertex) -> None:
    _experiments().start(dataset="sales", run_id=RUN_ID, trial_id="7", params={})

    vertex.start_run.assert_called_once_with(run=f"{RUN_ID}-trial-7", resume=False)


def test_a_retried_job_resumes_its_run(vertex: Vertex) -> None:
    exists = RuntimeError(f"Experiment Run with name {RUN_ID} in cascade-sales already exists.")
    vertex.start_run.side_effect = [exists, mock.DEFAULT]

    experiments = _experiments()
    experiments.start(dataset="sales", run_id=RUN_ID, trial_id=None, params={"layers": 2})

    assert vertex.start_run.call_args_list == [
        mock.call(run=RUN_ID, resume=False),
        mock.call(run=RUN_ID, resume=True),
    ]
    vertex.log_params.assert_called_once_with({"layers": 2})
    assert experiments.active


def test_a_failed_run_ends_failed(vertex: Vertex) -> None:
    experiments = _experiments()
    experiments.start(dataset="sales", run_id=RUN_ID, trial_id=None, params={})

    experiments.end(failed=True)
    experiments.end(failed=True)

    vertex.end_run.assert_called_once_with(state=Execution.State.FAILED)


def test_nothing_is_logged_or_ended_that_was_not_started(vertex: Vertex) -> None:
    experiments = _experiments()

    experiments.log_history({"loss": [0.5]})
    experiments.log_metrics({"auc": 0.8})
    experiments.end(failed=True)

    assert vertex.calls() == []


@pytest.mark.parametrize(
    "error",
    [
        gexc.PermissionDenied("aiplatform.metadataStores.get denied"),
        gexc.ServiceUnavailable("try again"),
        ValueError("bad experiment"),
        ImportError("no module named google.cloud.aiplatform"),
    ],
)
def test_a_failing_call_turns_logging_off_with_one_warning(
    vertex: Vertex, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    vertex.init.side_effect = error
    experiments = _experiments()

    with caplog.at_level(logging.WARNING, logger="cascade.trainer"):
        experiments.start(dataset="sales", run_id=RUN_ID, trial_id=None, params={"layers": 2})
        experiments.log_history({"loss": [0.5]})
        experiments.log_metrics({"auc": 0.8})
        experiments.end()

    assert vertex.calls() == ["init"]
    assert not experiments.active
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "init failed" in warnings[0].getMessage()
    assert str(error) in warnings[0].getMessage()


def test_a_failure_midway_stops_the_remaining_writes(vertex: Vertex) -> None:
    vertex.log_time_series_metrics.side_effect = [None, gexc.ResourceExhausted("quota")]
    experiments = _experiments()
    experiments.start(dataset="sales", run_id=RUN_ID, trial_id=None, params={})

    experiments.log_history({"loss": [0.9, 0.8, 0.7, 0.6]})
    experiments.log_metrics({"auc": 0.8})

    assert vertex.log_time_series_metrics.call_count == 2
    vertex.log_metrics.assert_not_called()


def test_a_hung_call_does_not_stall_training(
    vertex: Vertex, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    vertex.start_run.side_effect = lambda **_: release.wait(30)
    experiments = _experiments(timeout_s=0.05)

    try:
        with caplog.at_level(logging.WARNING, logger="cascade.trainer"):
            experiments.start(dataset="sales", run_id=RUN_ID, trial_id=None, params={})
            experiments.log_metrics({"auc": 0.8})
    finally:
        release.set()

    assert "start_run took longer than 0.05 s" in caplog.text
    vertex.log_params.assert_not_called()
    vertex.log_metrics.assert_not_called()
    assert not experiments.active


@pytest.mark.usefixtures("vertex")
def test_the_mocks_hold_the_pinned_sdks_signatures() -> None:
    """What makes the assertions above mean something: a call the SDK would refuse fails."""
    with pytest.raises(TypeError):
        aiplatform.start_run(run_name=RUN_ID)  # the stale keyword of some Google samples
    with pytest.raises(TypeError):
        aiplatform.init(experiment_name="cascade-sales")
    with pytest.raises(TypeError):
        aiplatform.log_time_series_metrics({"loss": 0.5}, 1, None, "extra")


# -- from the trainer ----------------------------------------------------------------------


def _probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
    return probe_model(model_dir, calls=5)


def test_the_trainer_logs_its_run(vertex: Vertex) -> None:
    storage = TrainerStorage(MemoryBuckets())
    job_spec_uri, spec, job_spec = write_run(
        storage, rows=400, model="boosted_trees", hyperparameters=TREES
    )
    args = TrainerArgs(job_spec_uri=job_spec_uri, job_name="train-1")

    result = run(
        args, storage=storage, bus=RecordingBus(), probe=_probe_here, experiments=_experiments()
    )

    vertex.init.assert_called_once_with(
        project=PROJECT,
        location=REGION,
        experiment=experiment_name(spec.dataset),
        experiment_tensorboard=TENSORBOARD,
    )
    vertex.start_run.assert_called_once_with(run=run_name(job_spec.run_id), resume=False)
    params = vertex.log_params.call_args.args[0]
    assert params["model"] == "boosted_trees"
    assert params["epochs"] == job_spec.epochs
    steps = [c.kwargs["step"] for c in vertex.log_time_series_metrics.call_args_list]
    assert steps == list(range(1, result.fit.epochs_trained + 1))
    assert result.report is not None
    metrics = vertex.log_metrics.call_args.args[0]
    assert metrics["epochs_trained"] == result.fit.epochs_trained
    assert {k: metrics[k] for k in result.report.candidate.overall.metrics} == dict(
        result.report.candidate.overall.metrics
    )
    vertex.end_run.assert_called_once_with(state=Execution.State.COMPLETE)


def test_vertex_failures_do_not_fail_the_trainer(vertex: Vertex) -> None:
    for name in (*SDK_FUNCTIONS, "end_run"):
        getattr(vertex, name).side_effect = gexc.PermissionDenied("denied")
    storage = TrainerStorage(MemoryBuckets())
    job_spec_uri, _, _ = write_run(storage, rows=400, model="boosted_trees", hyperparameters=TREES)
    args = TrainerArgs(job_spec_uri=job_spec_uri, job_name="train-1")

    result = run(
        args, storage=storage, bus=RecordingBus(), probe=_probe_here, experiments=_experiments()
    )

    assert result.message_id is not None
    assert vertex.calls() == ["init"]
