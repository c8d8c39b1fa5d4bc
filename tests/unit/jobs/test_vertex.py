"""The Vertex AI runner: the exact requests it sends to an autospec'd JobServiceClient."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import aiplatform_v1 as vertex
from google.protobuf import duration_pb2
from pytest_mock import MockerFixture

from cascade.core.errors import InvalidConfigError, TransientError, UnknownJobError
from cascade.core.job_spec import ParameterSpec, TrainingJobSpec, TuningSpec, WorkerPool
from cascade.core.settings import Settings
from cascade.jobs.vertex_runner import VertexJobRunner, tuning_status

PARENT = "projects/proj-1/locations/europe-west4"
OUTPUT = "gs://arts/runs/credit-abc/training"
SETTINGS = Settings(
    project="proj-1",
    region="europe-west4",
    landing_bucket="land-1",
    artifacts_bucket="arts",
    topic_prefix="cx-",
    trainer_image="europe-docker.pkg.dev/proj-1/images/trainer@sha256:ab",
    jobs_service_account="cx-vertex-jobs@proj-1.iam.gserviceaccount.com",
)
SPEC = TrainingJobSpec(
    run_id="credit-abc",
    dataset="credit",
    display_name="cascade-train-credit-abc",
    transform_spec_uri="gs://arts/runs/credit-abc/transform/transform.json",
    output_dir=OUTPUT,
    chief=WorkerPool(
        machine_type="n1-standard-8", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1
    ),
    workers=WorkerPool(machine_type="n1-standard-8", replica_count=2),
    labels={"cascade_run_id": "credit-abc", "cascade_dataset": "credit"},
)
TUNING = TuningSpec(
    metric="eval_auc",
    goal="maximize",
    algorithm="random",
    max_trials=12,
    parallel_trials=3,
    parameters=[
        ParameterSpec(name="learning_rate", type="double", min=1e-4, max=0.1, scale="log"),
        ParameterSpec(name="hidden_layers", type="integer", min=1, max=4),
        ParameterSpec(name="hidden_units", type="discrete", values=[32, 64, 128]),
        ParameterSpec(name="optimizer", type="categorical", values=["adam", "sgd"]),
        # UNIT_REVERSE_LOG_SCALE needs a strictly positive range: Vertex AI refuses min 0.0
        ParameterSpec(name="dropout", type="double", min=0.01, max=0.5, scale="reverse_log"),
        ParameterSpec(name="momentum", type="double", min=0.5, max=0.99, scale="linear"),
        ParameterSpec(name="batch_size", type="discrete", values=[32, 64, 128], scale="log"),
    ],
)


@pytest.fixture
def client(mocker: MockerFixture) -> Any:
    mock = mocker.create_autospec(vertex.JobServiceClient, instance=True)
    mock.list_custom_jobs.return_value = []
    mock.list_hyperparameter_tuning_jobs.return_value = []
    mock.create_custom_job.return_value = vertex.CustomJob(name=f"{PARENT}/customJobs/42")
    mock.create_hyperparameter_tuning_job.return_value = vertex.HyperparameterTuningJob(
        name=f"{PARENT}/hyperparameterTuningJobs/7"
    )
    return mock


def _runner(client: Any) -> VertexJobRunner:
    return VertexJobRunner(SETTINGS, lambda: client, timeout_s=3600)


def _expected_job_spec() -> vertex.CustomJobSpec:
    container = vertex.ContainerSpec(
        image_uri=SETTINGS.trainer_image,
        command=["python", "-m", "cascade.trainer.task"],
        args=[f"--job-spec-uri={OUTPUT}/job_spec.json"],
        env=[
            vertex.EnvVar(name="CASCADE_PROJECT", value="proj-1"),
            vertex.EnvVar(name="CASCADE_REGION", value="europe-west4"),
            vertex.EnvVar(name="CASCADE_LANDING_BUCKET", value="land-1"),
            vertex.EnvVar(name="CASCADE_ARTIFACTS_BUCKET", value="arts"),
            vertex.EnvVar(name="CASCADE_TOPIC_PREFIX", value="cx-"),
        ],
    )
    return vertex.CustomJobSpec(
        worker_pool_specs=[
            vertex.WorkerPoolSpec(
                machine_spec=vertex.MachineSpec(
                    machine_type="n1-standard-8",
                    accelerator_type="NVIDIA_TESLA_T4",
                    accelerator_count=1,
                ),
                replica_count=1,
                container_spec=container,
            ),
            vertex.WorkerPoolSpec(
                machine_spec=vertex.MachineSpec(machine_type="n1-standard-8"),
                replica_count=2,
                container_spec=container,
            ),
        ],
        service_account="cx-vertex-jobs@proj-1.iam.gserviceaccount.com",
        base_output_directory=vertex.GcsDestination(output_uri_prefix=OUTPUT),
        scheduling=vertex.Scheduling(timeout=duration_pb2.Duration(seconds=3600)),
    )


def test_a_training_job_is_a_custom_job_with_chief_and_worker_pools(client: Any) -> None:
    name = _runner(client).submit(SPEC, request_id="credit-abc")

    assert name == f"{PARENT}/customJobs/42"
    client.list_custom_jobs.assert_called_once_with(
        request={
            "parent": PARENT,
            "filter": (
                'labels.cascade_run_id="credit-abc" AND display_name="cascade-train-credit-abc"'
            ),
        }
    )
    client.create_custom_job.assert_called_once_with(
        parent=PARENT,
        custom_job=vertex.CustomJob(
            display_name="cascade-train-credit-abc",
            job_spec=_expected_job_spec(),
            labels={"cascade_run_id": "credit-abc", "cascade_dataset": "credit"},
        ),
    )
    client.create_hyperparameter_tuning_job.assert_not_called()


def test_with_a_vertex_tensorboard_every_pool_is_told_where_experiments_log(
    client: Any,
) -> None:
    tensorboard = "projects/proj-1/locations/europe-west4/tensorboards/123"
    settings = SETTINGS.model_copy(update={"vertex_tensorboard": tensorboard})

    VertexJobRunner(settings, lambda: client, timeout_s=3600).submit(SPEC, request_id="credit-abc")

    job = client.create_custom_job.call_args.kwargs["custom_job"]
    expected = [
        *_expected_job_spec().worker_pool_specs[0].container_spec.env,
        vertex.EnvVar(name="CASCADE_VERTEX_TENSORBOARD", value=tensorboard),
    ]
    for pool in job.job_spec.worker_pool_specs:
        assert list(pool.container_spec.env) == expected


def test_a_tuning_job_carries_the_study_spec_and_the_trial_job_spec(client: Any) -> None:
    spec = SPEC.model_copy(update={"tuning": TUNING, "display_name": "cascade-tune-credit-abc"})

    name = _runner(client).submit(spec, request_id="credit-abc")

    Spec = vertex.StudySpec.ParameterSpec  # noqa: N806
    assert name == f"{PARENT}/hyperparameterTuningJobs/7"
    client.create_hyperparameter_tuning_job.assert_called_once_with(
        parent=PARENT,
        hyperparameter_tuning_job=vertex.HyperparameterTuningJob(
            display_name="cascade-tune-credit-abc",
            study_spec=vertex.StudySpec(
                metrics=[
                    vertex.StudySpec.MetricSpec(
                        metric_id="eval_auc", goal=vertex.StudySpec.MetricSpec.GoalType.MAXIMIZE
                    )
                ],
                parameters=[
                    Spec(
                        parameter_id="learning_rate",
                        double_value_spec=Spec.DoubleValueSpec(min_value=1e-4, max_value=0.1),
                        scale_type=Spec.ScaleType.UNIT_LOG_SCALE,
                    ),
                    Spec(
                        parameter_id="hidden_layers",
                        integer_value_spec=Spec.IntegerValueSpec(min_value=1, max_value=4),
                        scale_type=Spec.ScaleType.UNIT_LINEAR_SCALE,
                    ),
                    Spec(
                        parameter_id="hidden_units",
                        discrete_value_spec=Spec.DiscreteValueSpec(values=[32.0, 64.0, 128.0]),
                        scale_type=Spec.ScaleType.UNIT_LINEAR_SCALE,
                    ),
                    Spec(
                        parameter_id="optimizer",
                        categorical_value_spec=Spec.CategoricalValueSpec(values=["adam", "sgd"]),
                    ),
                    Spec(
                        parameter_id="dropout",
                        double_value_spec=Spec.DoubleValueSpec(min_value=0.01, max_value=0.5),
                        scale_type=Spec.ScaleType.UNIT_REVERSE_LOG_SCALE,
                    ),
                    Spec(
                        parameter_id="momentum",
                        double_value_spec=Spec.DoubleValueSpec(min_value=0.5, max_value=0.99),
                        scale_type=Spec.ScaleType.UNIT_LINEAR_SCALE,
                    ),
                    Spec(
                        parameter_id="batch_size",
                        discrete_value_spec=Spec.DiscreteValueSpec(values=[32.0, 64.0, 128.0]),
                        scale_type=Spec.ScaleType.UNIT_LOG_SCALE,
                    ),
                ],
                algorithm=vertex.StudySpec.Algorithm.RANDOM_SEARCH,
                measurement_selection_type=(
                    vertex.StudySpec.MeasurementSelectionType.BEST_MEASUREMENT
                ),
            ),
            max_trial_count=12,
            parallel_trial_count=3,
            trial_job_spec=_expected_job_spec(),
            labels={"cascade_run_id": "credit-abc", "cascade_dataset": "credit"},
        ),
    )
    client.create_custom_job.assert_not_called()


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("grid", vertex.StudySpec.Algorithm.GRID_SEARCH),
        ("random", vertex.StudySpec.Algorithm.RANDOM_SEARCH),
        ("bayesian", vertex.StudySpec.Algorithm.ALGORITHM_UNSPECIFIED),
    ],
)
def test_algorithms_map_to_vertex_enums(client: Any, algorithm: str, expected: Any) -> None:
    tuning = TuningSpec(
        algorithm=algorithm,
        parameters=[ParameterSpec(name="units", type="discrete", values=[1, 2])],
    )

    _runner(client).submit(SPEC.model_copy(update={"tuning": tuning}), request_id="r")

    sent = client.create_hyperparameter_tuning_job.call_args.kwargs["hyperparameter_tuning_job"]
    assert sent.study_spec.algorithm == expected


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        (
            ParameterSpec(name="x", type="double", min=0.1, max=1.0),
            vertex.StudySpec.ParameterSpec.ScaleType.UNIT_LINEAR_SCALE,
        ),
        (
            ParameterSpec(name="x", type="double", min=0.1, max=1.0, scale="linear"),
            vertex.StudySpec.ParameterSpec.ScaleType.UNIT_LINEAR_SCALE,
        ),
        (
            ParameterSpec(name="x", type="integer", min=1, max=8, scale="log"),
            vertex.StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE,
        ),
        (
            ParameterSpec(name="x", type="integer", min=1, max=8, scale="reverse_log"),
            vertex.StudySpec.ParameterSpec.ScaleType.UNIT_REVERSE_LOG_SCALE,
        ),
        (
            ParameterSpec(name="x", type="discrete", values=[0.5, 1.5], scale="reverse_log"),
            vertex.StudySpec.ParameterSpec.ScaleType.UNIT_REVERSE_LOG_SCALE,
        ),
        (
            ParameterSpec(name="x", type="categorical", values=["a", True]),
            vertex.StudySpec.ParameterSpec.ScaleType.SCALE_TYPE_UNSPECIFIED,
        ),
    ],
)
def test_each_scale_maps_to_its_vertex_scale_type(
    client: Any, parameter: ParameterSpec, expected: Any
) -> None:
    tuning = TuningSpec(algorithm="random", parameters=[parameter])

    _runner(client).submit(SPEC.model_copy(update={"tuning": tuning}), request_id="r")

    sent = client.create_hyperparameter_tuning_job.call_args.kwargs["hyperparameter_tuning_job"]
    assert [p.scale_type for p in sent.study_spec.parameters] == [expected]


def test_a_tuning_job_model_dir_is_the_best_trials_aip_model_dir() -> None:
    job = vertex.HyperparameterTuningJob(
        name=f"{PARENT}/hyperparameterTuningJobs/7",
        state=vertex.JobState.JOB_STATE_SUCCEEDED,
        study_spec=vertex.StudySpec(
            metrics=[vertex.StudySpec.MetricSpec(metric_id="eval_loss", goal=GoalType.MINIMIZE)]
        ),
        trial_job_spec=vertex.CustomJobSpec(
            base_output_directory=vertex.GcsDestination(output_uri_prefix=f"{OUTPUT}/")
        ),
        trials=[
            vertex.Trial(
                id="4",
                state=vertex.Trial.State.SUCCEEDED,
                final_measurement=vertex.Measurement(
                    metrics=[vertex.Measurement.Metric(metric_id="eval_loss", value=0.2)]
                ),
            )
        ],
    )

    status = tuning_status(job)

    assert status.model_dir == f"{OUTPUT}/4/model"  # AIP_MODEL_DIR of trial 4, no final /


def test_a_repeated_submit_returns_the_job_it_created(client: Any) -> None:
    client.list_custom_jobs.return_value = [vertex.CustomJob(name=f"{PARENT}/customJobs/41")]

    name = _runner(client).submit(SPEC, request_id="credit-abc")

    assert name == f"{PARENT}/customJobs/41"
    client.create_custom_job.assert_not_called()


def test_get_maps_states_and_the_model_dir(client: Any) -> None:
    client.get_custom_job.return_value = vertex.CustomJob(
        name=f"{PARENT}/customJobs/42",
        state=vertex.JobState.JOB_STATE_FAILED,
        error={"code": 3, "message": "replica exited 1"},
        job_spec=vertex.CustomJobSpec(
            base_output_directory=vertex.GcsDestination(output_uri_prefix=OUTPUT)
        ),
    )

    status = _runner(client).get(f"{PARENT}/customJobs/42")

    client.get_custom_job.assert_called_once_with(name=f"{PARENT}/customJobs/42")
    assert (status.state, status.error, status.model_dir) == (
        "failed",
        "replica exited 1",
        f"{OUTPUT}/model",
    )


GoalType = vertex.StudySpec.MetricSpec.GoalType


@pytest.mark.parametrize(("goal", "best"), [(GoalType.MAXIMIZE, "2"), (GoalType.MINIMIZE, "1")])
def test_a_tuning_job_reports_its_best_trial(client: Any, goal: Any, best: str) -> None:
    def trial(
        trial_id: str, value: float, units: float, state: Any = vertex.Trial.State.SUCCEEDED
    ) -> vertex.Trial:
        return vertex.Trial(
            id=trial_id,
            state=state,
            parameters=[vertex.Trial.Parameter(parameter_id="hidden_units", value=units)],
            final_measurement=vertex.Measurement(
                metrics=[vertex.Measurement.Metric(metric_id="eval_auc", value=value)]
            ),
        )

    client.get_hyperparameter_tuning_job.return_value = vertex.HyperparameterTuningJob(
        name=f"{PARENT}/hyperparameterTuningJobs/7",
        state=vertex.JobState.JOB_STATE_SUCCEEDED,
        study_spec=vertex.StudySpec(
            metrics=[vertex.StudySpec.MetricSpec(metric_id="eval_auc", goal=goal)]
        ),
        trial_job_spec=vertex.CustomJobSpec(
            base_output_directory=vertex.GcsDestination(output_uri_prefix=OUTPUT)
        ),
        trials=[
            trial("1", 0.70, 32),
            trial("2", 0.90, 64),
            trial("3", 0.99, 128, vertex.Trial.State.INFEASIBLE),
        ],
    )

    status = _runner(client).get(f"{PARENT}/hyperparameterTuningJobs/7")

    assert status.state == "succeeded"
    assert status.best_trial_id == best
    assert status.model_dir == f"{OUTPUT}/{best}/model"
    assert status.best_hyperparameters == {"hidden_units": 64.0 if best == "2" else 32.0}


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (gexc.NotFound("gone"), UnknownJobError),
        (gexc.ServiceUnavailable("later"), TransientError),
        (gexc.InvalidArgument("bad machine type"), InvalidConfigError),
        (gexc.PermissionDenied("no actAs"), InvalidConfigError),
    ],
)
def test_api_errors_map_to_retry_or_not(client: Any, error: Exception, raised: type) -> None:
    client.create_custom_job.side_effect = error

    with pytest.raises(raised):
        _runner(client).submit(SPEC, request_id="credit-abc")


def test_without_a_trainer_image_nothing_is_submitted(client: Any) -> None:
    runner = VertexJobRunner(SETTINGS.model_copy(update={"trainer_image": ""}), lambda: client)

    with pytest.raises(InvalidConfigError, match="CASCADE_TRAINER_IMAGE"):
        runner.submit(SPEC, request_id="credit-abc")
    client.create_custom_job.assert_not_called()


def test_cancel_calls_the_matching_method(client: Any) -> None:
    runner = _runner(client)

    runner.cancel(f"{PARENT}/customJobs/42")
    runner.cancel(f"{PARENT}/hyperparameterTuningJobs/7")

    client.cancel_custom_job.assert_called_once_with(name=f"{PARENT}/customJobs/42")
    client.cancel_hyperparameter_tuning_job.assert_called_once_with(
        name=f"{PARENT}/hyperparameterTuningJobs/7"
    )
