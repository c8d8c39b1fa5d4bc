"""Parameter-server training as a job: the config that asks for it (and its hostile
values), the job spec's worker pools, the exact Vertex AI CustomJob request, and the
local job service's rule that the chief's exit ends the job."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.cloud import aiplatform_v1 as vertex
from google.protobuf import duration_pb2
from pytest_mock import MockerFixture

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, InvalidConfigError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.job_spec import ParameterServerSpec, TrainingJobSpec, WorkerPool
from cascade.core.messages import TrainRequest
from cascade.core.pipeline_config import (
    PipelineConfig,
    parse_pipeline_config,
    push_pipeline_config,
)
from cascade.core.runs import run_id_for_request
from cascade.core.settings import Settings
from cascade.jobs.spec_builder import build_job_spec, embedding_table_rows, read_run_transform
from cascade.jobs.vertex_runner import VertexJobRunner
from cascade.localcloud.job_executor import LocalJobExecutor, LocalJobStore
from cascade.steps.train import handle_train_request
from cascade.transform.catalog import (
    TransformPointer,
    advance_latest_transform,
    transform_spec_name,
)
from cascade.transform.spec import HashTransform, TransformSpec
from tests.unit.jobs.fakes import FakeJobRunner, end_job
from tests.unit.jobs.test_local_jobs import REPO_ROOT, TIMEOUT_S, RecordingNotifier
from tests.unit.trainer.builders import make_spec

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


def _config(training: dict[str, Any]) -> PipelineConfig:
    document = {"label": "defaulted", "problem_type": "binary", "training": training}
    return PipelineConfig.model_validate(document)


def _parse(training: str) -> PipelineConfig:
    text = "label: defaulted\nproblem_type: binary\ntraining:\n" + training
    return parse_pipeline_config(text, where="gs://arts/datasets/credit/pipeline.yaml")


def _transform(hash_buckets: int) -> TransformSpec:
    spec = make_spec("binary")
    features = [
        HashTransform(name="region", hash_buckets=hash_buckets) if f.name == "region" else f
        for f in spec.features
    ]
    return spec.model_copy(update={"features": features})


def _job_spec(config: PipelineConfig, transform: TransformSpec | None = None) -> TrainingJobSpec:
    return build_job_spec(
        run_id="credit-abc",
        dataset="credit",
        transform_spec_uri="gs://arts/runs/credit-abc/transform/transform.json",
        output_dir=OUTPUT,
        config=config,
        hyperparameters={},
        tune=False,
        transform=transform,
    )


# -- the config ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("training", "field"),
    [
        (
            "  model: network\n  distribution: parameter_server\n  parameter_servers: 0\n",
            "training.parameter_servers",
        ),
        ("  model: network\n  parameter_servers: -3\n", "training.parameter_servers"),
        ("  model: network\n  parameter_servers: 1000000000\n", "training.parameter_servers"),
        ("  model: network\n  workers: 0\n", "training.workers"),
        ("  model: network\n  workers: 99999999999\n", "training.workers"),
        ("  model: network\n  embedding_dim: 0\n", "training.embedding_dim"),
        ("  model: network\n  embedding_dim: 100000\n", "training.embedding_dim"),
        ("  model: network\n  min_shard_bytes: 10\n", "training.min_shard_bytes"),
        (
            "  model: network\n  parameter_server_above_bytes: -1\n",
            "training.parameter_server_above_bytes",
        ),
        ("  model: network\n  distribution: model_parallel\n", "training.distribution"),
        ("  model: network\n  parameter_servers: two\n", "training.parameter_servers"),
    ],
)
def test_hostile_distribution_values_are_refused_naming_the_field(
    training: str, field: str
) -> None:
    with pytest.raises(InvalidConfigError) as raised:
        _parse(training)

    assert "pipeline.yaml" in str(raised.value)
    assert field in str(raised.value)


@pytest.mark.parametrize("model", ["boosted_trees", "auto"])
def test_parameter_servers_need_the_network_family(model: str) -> None:
    with pytest.raises(InvalidConfigError, match="parameter_server needs model network"):
        _parse(f"  model: {model}\n  distribution: parameter_server\n")


def test_the_documented_defaults() -> None:
    training = PipelineConfig().training

    assert training.distribution == "auto"
    assert training.parameter_servers == 2
    assert training.embedding_dim == 16
    assert training.min_shard_bytes == 256 << 10
    assert training.parameter_server_above_bytes == 256 << 20


def test_auto_switches_to_parameter_servers_above_the_table_size() -> None:
    config = _config(
        {"model": "network", "embedding_dim": 16, "parameter_server_above_bytes": 1 << 20}
    )
    # 16,384 rows x 16 columns x 4 bytes = 1 MiB: not above; one more row is
    at_limit, above = _transform(16384), _transform(16385)

    assert embedding_table_rows(above)["region"] == 16385
    assert _job_spec(config, at_limit).parameter_servers is None
    sharded = _job_spec(config, above)
    assert sharded.parameter_servers == WorkerPool(replica_count=2)
    assert sharded.sharding == ParameterServerSpec(embedding_dim=16, min_shard_bytes=256 << 10)
    assert _job_spec(config).parameter_servers is None  # no transform known: data parallel


def test_auto_never_shards_trees_and_data_parallel_never_shards() -> None:
    huge = _transform(1 << 24)

    assert _job_spec(_config({"model": "boosted_trees"}), huge).parameter_servers is None
    data_parallel = _config({"model": "network", "distribution": "data_parallel"})
    assert _job_spec(data_parallel, huge).parameter_servers is None


def test_parameter_server_pools_are_chief_workers_and_servers() -> None:
    config = _config(
        {
            "model": "network",
            "distribution": "parameter_server",
            "workers": 3,
            "parameter_servers": 4,
            "machine_type": "n1-highmem-8",
            "accelerator_type": "NVIDIA_TESLA_T4",
            "accelerator_count": 1,
            "embedding_dim": 32,
            "min_shard_bytes": 1 << 20,
        }
    )

    spec = _job_spec(config)

    gpu = {"machine_type": "n1-highmem-8", "accelerator_type": "NVIDIA_TESLA_T4"}
    assert spec.chief == WorkerPool(replica_count=1, accelerator_count=1, **gpu)
    assert spec.workers == WorkerPool(replica_count=3, accelerator_count=1, **gpu)
    assert spec.parameter_servers == WorkerPool(machine_type="n1-highmem-8", replica_count=4)
    assert spec.sharding == ParameterServerSpec(embedding_dim=32, min_shard_bytes=1 << 20)
    assert spec.replica_count == 8


def test_data_parallel_pools_are_unchanged() -> None:
    spec = _job_spec(_config({"model": "network", "distribution": "data_parallel", "workers": 3}))

    assert spec.workers == WorkerPool(replica_count=2)
    assert spec.parameter_servers is None
    assert spec.sharding is None


def test_parameter_server_training_is_not_tuned() -> None:
    config = PipelineConfig.model_validate(
        {
            "label": "defaulted",
            "problem_type": "binary",
            "training": {"model": "network", "distribution": "parameter_server"},
            "tuning": {"enabled": True},
        }
    )

    with pytest.raises(BadRequestError, match="cannot be tuned"):
        _job_spec(config)


@pytest.mark.parametrize(
    "changes",
    [
        {"parameter_servers": {"replica_count": 2}},  # no sharding
        {"sharding": {}},  # no pool
        {"parameter_servers": {"replica_count": 2}, "sharding": {}},  # no workers
        {
            "parameter_servers": {"replica_count": 2},
            "sharding": {},
            "workers": {"replica_count": 1},
            "model": "boosted_trees",
        },
        {
            "parameter_servers": {"replica_count": 0},
            "sharding": {},
            "workers": {"replica_count": 1},
        },
    ],
)
def test_an_inconsistent_job_spec_is_refused(changes: dict[str, Any]) -> None:
    document = {
        "run_id": "r",
        "dataset": "credit",
        "display_name": "d",
        "transform_spec_uri": "gs://a/t.json",
        "output_dir": OUTPUT,
        **changes,
    }

    with pytest.raises(ValueError, match=r"parameter|replica_count"):
        TrainingJobSpec.model_validate(document)


# -- Vertex AI -----------------------------------------------------------------------


@pytest.fixture
def client(mocker: MockerFixture) -> Any:
    mock = mocker.create_autospec(vertex.JobServiceClient, instance=True)
    mock.list_custom_jobs.return_value = []
    mock.create_custom_job.return_value = vertex.CustomJob(name=f"{PARENT}/customJobs/42")
    return mock


def test_the_custom_job_has_chief_worker_and_parameter_server_pools(client: Any) -> None:
    spec = TrainingJobSpec(
        run_id="credit-abc",
        dataset="credit",
        display_name="cascade-train-credit-abc",
        transform_spec_uri="gs://arts/runs/credit-abc/transform/transform.json",
        output_dir=OUTPUT,
        chief=WorkerPool(machine_type="n1-standard-8"),
        workers=WorkerPool(machine_type="n1-standard-8", replica_count=3),
        parameter_servers=WorkerPool(machine_type="n1-highmem-16", replica_count=2),
        sharding=ParameterServerSpec(embedding_dim=32),
        labels={"cascade_run_id": "credit-abc", "cascade_dataset": "credit"},
    )

    name = VertexJobRunner(SETTINGS, lambda: client, timeout_s=3600).submit(
        spec, request_id="credit-abc"
    )

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
    assert name == f"{PARENT}/customJobs/42"
    client.create_custom_job.assert_called_once_with(
        parent=PARENT,
        custom_job=vertex.CustomJob(
            display_name="cascade-train-credit-abc",
            job_spec=vertex.CustomJobSpec(
                worker_pool_specs=[
                    vertex.WorkerPoolSpec(  # [0] chief: the coordinator
                        machine_spec=vertex.MachineSpec(machine_type="n1-standard-8"),
                        replica_count=1,
                        container_spec=container,
                    ),
                    vertex.WorkerPoolSpec(  # [1] workers
                        machine_spec=vertex.MachineSpec(machine_type="n1-standard-8"),
                        replica_count=3,
                        container_spec=container,
                    ),
                    vertex.WorkerPoolSpec(  # [2] parameter servers (TF_CONFIG "ps")
                        machine_spec=vertex.MachineSpec(machine_type="n1-highmem-16"),
                        replica_count=2,
                        container_spec=container,
                    ),
                ],
                service_account="cx-vertex-jobs@proj-1.iam.gserviceaccount.com",
                base_output_directory=vertex.GcsDestination(output_uri_prefix=OUTPUT),
                scheduling=vertex.Scheduling(timeout=duration_pb2.Duration(seconds=3600)),
            ),
            labels={"cascade_run_id": "credit-abc", "cascade_dataset": "credit"},
        ),
    )


# -- the local job service ------------------------------------------------------------


def _executor(root: Path) -> LocalJobExecutor:
    return LocalJobExecutor(
        LocalJobStore(root / "jobs"),
        RecordingNotifier(),
        project="p",
        trainer_module="tests.unit.jobs.fake_trainer",
        python=sys.executable,
        base_environment={n: os.environ[n] for n in ("PATH", "HOME") if n in os.environ},
        cwd=REPO_ROOT,
        clock=lambda: datetime(2026, 11, 27, tzinfo=UTC),
    )


def _local_spec(tmp_path: Path, **hyperparameters: object) -> TrainingJobSpec:
    spec = TrainingJobSpec.model_validate(
        {
            "run_id": "credit-r1",
            "dataset": "credit",
            "display_name": "cascade-train-credit-r1",
            "transform_spec_uri": "gs://cascade-artifacts/runs/credit-r1/transform/t.json",
            "output_dir": str(tmp_path / "out"),
            "hyperparameters": hyperparameters,
            "workers": {"replica_count": 1},
            "parameter_servers": {"replica_count": 2},
            "sharding": {},
        }
    )
    Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
    Path(spec.job_spec_uri).write_text(spec.model_dump_json())
    return spec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    return status != "Z"


def test_a_parameter_server_job_ends_with_its_chief_and_stops_the_servers(
    tmp_path: Path,
) -> None:
    executor = _executor(tmp_path)
    job = executor.submit(_local_spec(tmp_path), "credit-r1")
    finished = executor.wait(job.job_id, TIMEOUT_S)

    assert finished is not None
    assert finished.state == "succeeded", finished.error
    replicas = {
        path.stem: json.loads(path.read_text())
        for path in (tmp_path / "out" / "replicas").iterdir()
    }
    assert set(replicas) == {"chief-0", "worker-0", "ps-0", "ps-1"}
    cluster = replicas["chief-0"]["tf_config"]["cluster"]
    assert [len(cluster[kind]) for kind in ("chief", "worker", "ps")] == [1, 1, 2]
    assert replicas["ps-1"]["tf_config"]["task"] == {"type": "ps", "index": 1}
    spec_cluster = json.loads(replicas["ps-1"]["environment"]["CLUSTER_SPEC"])
    assert spec_cluster["cluster"]["workerpool2"] == cluster["ps"]
    assert spec_cluster["task"] == {"type": "workerpool2", "index": 1}
    logs = sorted(path.name for path in (tmp_path / "jobs" / job.job_id / "logs").iterdir())
    assert logs == ["chief-0.log", "ps-0.log", "ps-1.log", "worker-0.log"]
    # the worker and ps replicas serve until stopped: the job stopped them
    assert not any(_pid_alive(told["pid"]) for told in replicas.values())


def test_a_failing_chief_fails_the_parameter_server_job(tmp_path: Path) -> None:
    executor = _executor(tmp_path)
    job = executor.submit(_local_spec(tmp_path, fail=True), "credit-r1")
    finished = executor.wait(job.job_id, TIMEOUT_S)

    assert finished is not None
    assert finished.state == "failed"
    assert "replica chief-0 exited with status 3" in finished.error


def test_auto_weighs_the_transform_the_job_trains_on() -> None:
    store = MemoryArtifactStore("arts")
    assert read_run_transform(store, run_id="credit-new", dataset="credit") is None
    latest = _transform(1 << 20).model_copy(update={"run_id": "credit-old"})
    store.write_json(transform_spec_name("credit-old"), latest)
    pointer = TransformPointer(
        run_id="credit-old",
        transform_uri=store.uri(transform_spec_name("credit-old")),
        files=1,
        rows=10,
        created_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    advance_latest_transform(store, pointer, "credit")

    # a retrain without its own transform: the dataset's latest
    assert read_run_transform(store, run_id="credit-new", dataset="credit") == latest
    own = _transform(8).model_copy(update={"run_id": "credit-new"})
    store.write_json(transform_spec_name("credit-new"), own)
    assert read_run_transform(store, run_id="credit-new", dataset="credit") == own


def test_the_train_step_weighs_the_transform_for_auto(step_context: StepContext) -> None:
    """``distribution: auto`` in a dataset's config: the train step reads the transform
    it trains on, so a table above the size is sharded and one below it is not."""
    config = (
        "label: defaulted\nproblem_type: binary\ntraining:\n  model: network\n"
        "  parameter_server_above_bytes: 1048576\n"
    )
    push_pipeline_config(step_context.artifacts, "credit", config.encode(), where="pipeline.yaml")
    for request_id, buckets, sharded in (("small", 16384, False), ("big", 16385, True)):
        run_id = run_id_for_request("credit", request_id)
        own = _transform(buckets).model_copy(update={"run_id": run_id})
        step_context.artifacts.write_json(transform_spec_name(run_id), own)
        runner = FakeJobRunner()
        request = TrainRequest(dataset="credit", request_id=request_id)

        handle_train_request(step_context, request, event_id=f"m-{request_id}", runner=runner)
        end_job(step_context, runner, run_id, f"e-{request_id}")

        (spec,) = runner.submitted
        assert (spec.parameter_servers is not None) is sharded, request_id
