"""A real multi-worker run: chief + worker processes with TF_CONFIG train one model together.

Both run ``python -m cascade.trainer.task`` exactly as the local job runner and Vertex AI
start it, against the local cloud's storage and Pub/Sub emulators.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cascade.core.clients import make_subscriber
from cascade.core.store import ArtifactStore
from cascade.trainer.infra_check import InfraCheck
from cascade.trainer.scoring import EvaluationReport
from cascade.trainer.storage import TrainerStorage
from tests.conftest import LocalCloud, free_port_block
from tests.unit.trainer.builders import write_run

pytestmark = pytest.mark.integration

TRAIN_ROWS, EVAL_ROWS, BATCH, EPOCHS = 1500, 500, 50, 2


def _subscribe_to_model_trained(local_cloud: LocalCloud) -> str:
    subscriber = make_subscriber(local_cloud.settings)
    project = local_cloud.settings.project
    subscription = subscriber.subscription_path(
        project, f"test-model-trained-{uuid.uuid4().hex[:8]}"
    )
    subscriber.create_subscription(
        name=subscription, topic=local_cloud.settings.topic_path("model-trained")
    )
    return subscription


def _pull_model_trained(
    local_cloud: LocalCloud, subscription: str, run_id: str
) -> list[dict[str, object]]:
    subscriber = make_subscriber(local_cloud.settings)
    found: list[dict[str, object]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=50, timeout=5)
        for received in response.received_messages:
            subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
            message = json.loads(received.message.data)
            if message["run_id"] == run_id:
                found.append(message)
    return found


def _trained_steps(output: str) -> list[int]:
    """Steps from the trainer's structured "trained N epochs, S steps" log lines."""
    steps = []
    for line in output.splitlines():
        if line.startswith("{") and "trained " in line:
            message = json.loads(line)["message"]
            if message.startswith("trained "):
                steps.append(int(message.split(", ")[1].split()[0]))
    return steps


def test_chief_and_worker_train_one_model_together(local_cloud: LocalCloud, tmp_path: Path) -> None:
    storage = TrainerStorage(lambda bucket: ArtifactStore(local_cloud.storage_client, bucket))
    run_id = f"mw-{uuid.uuid4().hex[:8]}"
    job_spec_uri, _, job_spec = write_run(
        storage,
        rows=TRAIN_ROWS + EVAL_ROWS,
        shards=3,
        run_id=run_id,
        epochs=EPOCHS,
        batch_size=BATCH,
        early_stopping_patience=5,
    )
    subscription = _subscribe_to_model_trained(local_cloud)
    base = free_port_block(2)
    cluster = {"chief": [f"127.0.0.1:{base}"], "worker": [f"127.0.0.1:{base + 1}"]}
    processes = []
    for task_type in ("chief", "worker"):
        tf_config = {"cluster": cluster, "task": {"type": task_type, "index": 0}}
        environment = {
            **os.environ,
            **local_cloud.local.runtime_environment(),
            "TF_CONFIG": json.dumps(tf_config),
            "CASCADE_JOB_NAME": f"job-{run_id}",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "cascade.trainer.task", f"--job-spec-uri={job_spec_uri}"],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )

    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=150)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    assert [process.returncode for process in processes] == [0, 0], "\n\n".join(
        o[-3000:] for o in outputs
    )
    # one model: both processes took the same global steps over the whole training split
    expected_steps = EPOCHS * -(-TRAIN_ROWS // (2 * BATCH))
    assert [_trained_steps(output) for output in outputs] == [[expected_steps], [expected_steps]]
    assert all("multi_worker_mirrored" in output for output in outputs)
    assert "saved_model.pb" in storage.list_tree(job_spec.model_dir)
    report = EvaluationReport.model_validate_json(
        storage.read_bytes(f"{job_spec.output_dir}/metrics.json")
    )
    assert report.eval_examples == EVAL_ROWS
    assert report.epochs_trained == EPOCHS
    infra_check = InfraCheck.model_validate_json(
        storage.read_bytes(f"{job_spec.output_dir}/infra_check.json")
    )
    assert infra_check.passed, infra_check.reasons
    messages = _pull_model_trained(local_cloud, subscription, run_id)
    assert [(m["model_uri"], m["job_name"]) for m in messages] == [
        (job_spec.model_dir, f"job-{run_id}")
    ]
