"""A real parameter-server cluster on loopback: chief + 1 worker + 2 ps processes.

The worker and ps tasks run ``python -m cascade.trainer.task`` exactly as the local job
service and Vertex AI start them (they only serve); the chief runs the trainer's ``run``
on local paths (``tests.unit.trainer.ps_chief``). The hashed feature's 4,096-row table is
above twice ``min_shard_bytes``, so the partitioner must split it across both ps tasks;
the export must load with ``tf.saved_model.load`` and carry exactly the signatures of the
single-machine network's export of the same transform.

The chief checkpoints every epoch (``AIP_CHECKPOINT_DIR``); the first chief dies right
after epoch 1's checkpoint and a second one resumes from it, so every assertion below is
about a run that survived losing its chief. The workers read the training data
themselves: the chief sends each step a chunk's path, and the worker logs what it read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from cascade.core.errors import BadInputError
from cascade.core.fakes import RecordingBus
from cascade.core.job_spec import TrainingJobSpec
from cascade.localcloud.processes import free_loopback_port
from cascade.trainer.args import TrainerArgs
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.task import run
from cascade.transform.spec import HashTransform, TransformSpec
from tests.unit.trainer.builders import write_run
from tests.unit.trainer.ps_chief import DIED_AFTER_CHECKPOINT

REPO_ROOT = Path(__file__).resolve().parents[3]
CHIEF_TIMEOUT_S = 300
TABLE_ROWS, EMBEDDING_DIM, MIN_SHARD_BYTES = 4096, 8, 16 << 10  # 128 KiB: 2 shards


def _local_only(bucket: str) -> Any:
    raise BadInputError(f"this test uses local paths, not gs://{bucket}")


def _write_sharded_run(base: Path) -> tuple[str, TrainingJobSpec, TransformSpec]:
    """A run on local paths whose ``region`` is hashed into a 4,096-row table."""
    storage = TrainerStorage(_local_only)
    job_spec_uri, spec, job_spec = write_run(
        storage,
        rows=1200,
        base=str(base),
        epochs=2,
        batch_size=64,
        hyperparameters={"hidden_units": 16, "learning_rate": 0.05},
        workers={"replica_count": 1},
        parameter_servers={"replica_count": 2},
        sharding={"embedding_dim": EMBEDDING_DIM, "min_shard_bytes": MIN_SHARD_BYTES},
    )
    features = [
        HashTransform(name="region", hash_buckets=TABLE_ROWS) if f.name == "region" else f
        for f in spec.features
    ]
    spec = spec.model_copy(update={"features": features})
    storage.write_bytes(job_spec.transform_spec_uri, spec.model_dump_json().encode())
    return job_spec_uri, job_spec, spec


def _tf_config(cluster: dict[str, list[str]], task_type: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def _start(
    argv: list[str], tf_config: str, log: Path, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        **(extra or {}),
        "TF_CONFIG": tf_config,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO_ROOT),
    }
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", *argv],
            env=environment,
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait(timeout=30)


def _signatures(model_dir: str) -> dict[str, Any]:
    """Each signature's inputs and outputs: name → (dtype, shape)."""
    loaded = tf.saved_model.load(model_dir)
    described = {}
    for key, function in loaded.signatures.items():
        _, inputs = function.structured_input_signature
        described[key] = {
            "inputs": {n: (s.dtype.name, s.shape.as_list()) for n, s in inputs.items()},
            "outputs": {
                n: (s.dtype.name, s.shape.as_list()) for n, s in function.structured_outputs.items()
            },
        }
    return described


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The chief dies right after epoch 1's checkpoint; a new chief (the worker and ps
    tasks still serving, as on Vertex AI when only the chief restarts) resumes at epoch 2."""
    base = tmp_path_factory.mktemp("ps-cluster")
    job_spec_uri, _, _ = _write_sharded_run(base)
    cluster = {
        "chief": [f"127.0.0.1:{free_loopback_port()}"],
        "worker": [f"127.0.0.1:{free_loopback_port()}"],
        "ps": [f"127.0.0.1:{free_loopback_port()}" for _ in range(2)],
    }
    trainer = ["cascade.trainer.task", f"--job-spec-uri={job_spec_uri}"]
    result_path = base / "chief-result.json"
    checkpoints = {"AIP_CHECKPOINT_DIR": str(base / "checkpoints")}
    processes = [
        _start(trainer, _tf_config(cluster, kind, index), base / f"{kind}-{index}.log")
        for kind, index in (("ps", 0), ("ps", 1), ("worker", 0))
    ]
    codes = []
    try:
        for attempt, exit_after in enumerate([["1"], []]):
            chief = _start(
                ["tests.unit.trainer.ps_chief", job_spec_uri, str(result_path), *exit_after],
                _tf_config(cluster, "chief", 0),
                base / f"chief-0-attempt-{attempt}.log",
                checkpoints,
            )
            processes.append(chief)
            codes.append(chief.wait(timeout=CHIEF_TIMEOUT_S))
        servers_alive = [process.poll() is None for process in processes[:3]]
    finally:
        _stop(processes)
    logs = "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(base.glob("*.log"))
    )
    assert codes == [DIED_AFTER_CHECKPOINT, 0], logs
    assert servers_alive == [True, True, True], logs  # they serve until stopped
    return {**json.loads(result_path.read_text()), "base": str(base), "logs": logs}


def test_the_large_table_is_a_sharded_variable_across_both_ps_tasks(
    cluster_run: dict[str, Any],
) -> None:
    region = cluster_run["tables"]["region"]

    assert region["type"] == "ShardedVariable"
    assert [shard["device"] for shard in region["shards"]] == [
        "/job:ps/replica:0/task:0/device:CPU:0",
        "/job:ps/replica:0/task:1/device:CPU:0",
    ]
    assert sum(shard["rows"] for shard in region["shards"]) == TABLE_ROWS
    # a small table is below twice min_shard_bytes: one variable on one ps task
    employment = cluster_run["tables"]["employment"]
    assert employment["type"] != "ShardedVariable"
    assert len(employment["shards"]) == 1
    assert employment["shards"][0]["device"].startswith("/job:ps/")


def test_the_sharded_model_trains_and_publishes_model_trained(
    cluster_run: dict[str, Any],
) -> None:
    history = cluster_run["history"]

    assert len(history["loss"]) == 2
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert cluster_run["steps"] == 2 * -(-900 // 64)  # 900 training rows, both epochs
    assert cluster_run["infra_check_passed"]
    assert [m["model_uri"] for m in cluster_run["published"]] == [cluster_run["model_dir"]]


def test_the_export_has_the_single_machine_signatures(
    cluster_run: dict[str, Any], tmp_path: Path
) -> None:
    storage = TrainerStorage(_local_only)
    job_spec_uri, job_spec, _ = _write_sharded_run(tmp_path)
    single = job_spec.model_copy(
        update={"workers": None, "parameter_servers": None, "sharding": None, "epochs": 1}
    )
    storage.write_bytes(job_spec_uri, single.model_dump_json().encode())

    def probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
        return probe_model(model_dir, calls=2)

    result = run(
        TrainerArgs(job_spec_uri=job_spec_uri),
        storage=storage,
        bus=RecordingBus(),
        probe=probe_here,
    )

    assert result.sharded is None  # the Keras network, one process
    sharded = _signatures(cluster_run["model_dir"])
    assert set(sharded) == {"serving_default", "serving_features"}
    assert sharded == _signatures(result.locations.model_dir)
    assert "customer_id" in sharded["serving_default"]["inputs"]
    assert "customer_id" in sharded["serving_default"]["outputs"]


def _checkpoint_values(path: str) -> dict[str, np.ndarray]:
    """The network's saved variables: ``tables/4`` (a sharded table saved whole), …"""
    reader = tf.train.load_checkpoint(path)
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    return {
        key.removeprefix("network/").removesuffix(suffix): reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith("network/") and key.endswith(suffix)
    }


def test_a_new_chief_resumes_from_the_last_checkpoint_with_its_values(
    cluster_run: dict[str, Any],
) -> None:
    restored = np.load(f"{cluster_run['base']}/chief-result.json.restored.npz")
    checkpoint = str(restored["checkpoint"])
    saved = _checkpoint_values(checkpoint)

    assert checkpoint.endswith("/checkpoints/parameter-servers/epoch-1")
    assert set(saved) == {
        name
        for name in restored.files
        if name.split("/")[0] in {"tables", "kernels", "biases", "accumulators"}
    }
    for name, value in saved.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    # the 4,096-row table was restored into the same two shards, and it had trained
    assert restored["region_shard_rows"].tolist() == [TABLE_ROWS // 2] * 2
    assert not np.allclose(saved["accumulators/4"], 0.1)
    assert int(restored["epoch"]) == 1
    assert int(restored["steps"]) == -(-900 // 64)
    second = Path(cluster_run["base"], "chief-0-attempt-1.log").read_text(errors="replace")
    assert "resuming at epoch 2" in second
    assert "epoch 1:" not in second  # epoch 1 was not trained again
    assert "epoch 2:" in second
    # the manager keeps a bounded number: epochs 1 and 2
    folder = Path(cluster_run["base"], "checkpoints/parameter-servers")
    indexes = sorted(p.name for p in folder.glob("*.index"))
    assert indexes == ["epoch-1.index", "epoch-2.index"]


def test_the_worker_reads_the_training_data_itself(cluster_run: dict[str, Any]) -> None:
    base = Path(cluster_run["base"])
    worker = (base / "worker-0.log").read_text(errors="replace")
    chiefs = "".join(p.read_text(errors="replace") for p in base.glob("chief-0-*.log"))
    read = re.findall(r'cascade-ps: read "\S*/((?:train|eval)-\d+\.chunk)" (\d+) rows', worker)

    # two training chunks (512 + 388 rows) and one eval chunk, each once per epoch
    assert sorted(read) == sorted(
        [("train-00000.chunk", "512"), ("train-00001.chunk", "388"), ("eval-00000.chunk", "300")]
        * 2
    )
    assert "cascade-ps: read" not in chiefs
