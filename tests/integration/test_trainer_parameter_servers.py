"""A parameter-server job through the local job service, with the real trainer.

The job service (Vertex AI's stand-in) starts the chief, one worker and two ps replicas
of ``python -m cascade.trainer.task`` with Vertex AI's environment (``TF_CONFIG`` with
``chief``, ``worker`` and ``ps`` tasks); the workers and parameter servers serve until
the chief, which reads its inputs from the storage emulator and publishes
``model-trained`` on the Pub/Sub emulator, exits — then the job has the chief's status.
The worker reads the training data itself, from chunks the chief wrote on this host.
"""

from __future__ import annotations

import time
import uuid

import pytest

from cascade.core.store import ArtifactStore
from cascade.jobs.local_runner import LocalJobRunner
from cascade.trainer.infra_check import InfraCheck
from cascade.trainer.scoring import EvaluationReport
from cascade.trainer.storage import TrainerStorage
from cascade.transform.spec import HashTransform
from tests.conftest import LocalCloud
from tests.unit.trainer.builders import write_run

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 300


def test_a_parameter_server_job_trains_shards_and_ends_with_its_chief(
    local_cloud: LocalCloud,
) -> None:
    storage = TrainerStorage(lambda bucket: ArtifactStore(local_cloud.storage_client, bucket))
    run_id = f"ps-{uuid.uuid4().hex[:8]}"
    _, spec, job_spec = write_run(
        storage,
        rows=1200,
        run_id=run_id,
        base=f"gs://{local_cloud.settings.artifacts_bucket}",
        epochs=2,
        batch_size=64,
        hyperparameters={"hidden_units": 16, "learning_rate": 0.05},
        workers={"replica_count": 1},
        parameter_servers={"replica_count": 2},
        sharding={"embedding_dim": 8, "min_shard_bytes": 16 << 10},
    )
    # the same run with ``region`` hashed into a 4,096-row table, under new object names
    # (the twin refuses a second write of one object within a second, as GCS does)
    features = [
        HashTransform(name="region", hash_buckets=4096) if f.name == "region" else f
        for f in spec.features
    ]
    transform_uri = job_spec.transform_spec_uri.replace("transform.json", "sharded.json")
    storage.write_bytes(
        transform_uri, spec.model_copy(update={"features": features}).model_dump_json().encode()
    )
    job_spec = job_spec.model_copy(
        update={"transform_spec_uri": transform_uri, "output_dir": f"{job_spec.output_dir}-ps"}
    )
    storage.write_bytes(job_spec.job_spec_uri, job_spec.model_dump_json().encode())
    jobs = LocalJobRunner(local_cloud.state.environment["CASCADE_JOB_SERVICE_URL"])

    name = jobs.submit(job_spec, request_id=run_id)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = jobs.get(name)
    while not status.finished:
        assert time.monotonic() < deadline, f"job {name} did not finish"
        time.sleep(0.5)
        status = jobs.get(name)

    job_id = name.rsplit("/", 1)[-1]
    logs = {
        path.name: path.read_text(errors="replace")
        for path in local_cloud.local.state_dir.rglob(f"{job_id}/logs/*.log")
    }
    assert status.state == "succeeded", f"{status.error}\n" + "\n".join(
        f"--- {n}\n{text[-2000:]}" for n, text in sorted(logs.items())
    )
    assert sorted(logs) == ["chief-0.log", "ps-0.log", "ps-1.log", "worker-0.log"]
    chief = logs["chief-0.log"]
    assert "(parameter_server, 1 replicas)" in chief
    assert "/job:ps/replica:0/task:0/device:CPU:0', '/job:ps/replica:0/task:1" in chief
    assert "serving as ps:1" in logs["ps-1.log"]
    # the worker reads the chunks itself (two training chunks, one eval chunk, 2 epochs);
    # the chief sends only their paths
    assert logs["worker-0.log"].count("cascade-ps: read") == 6
    assert "cascade-ps: read" not in chief
    # TensorFlow cannot reach the storage emulator: no checkpoints, as the Keras path
    assert "not checkpointing to gs://" in chief
    assert "saved_model.pb" in storage.list_tree(job_spec.model_dir)
    report = EvaluationReport.model_validate_json(
        storage.read_bytes(f"{job_spec.output_dir}/metrics.json")
    )
    assert report.epochs_trained == 2
    assert report.model_family == "network"
    check = InfraCheck.model_validate_json(
        storage.read_bytes(f"{job_spec.output_dir}/infra_check.json")
    )
    assert check.passed, check.reasons
