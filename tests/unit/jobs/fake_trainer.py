"""A stand-in trainer for job-runner tests: ``python -m tests.unit.jobs.fake_trainer``.

Same command line and environment as ``cascade.trainer.task``, no TensorFlow. Its
"model" is a JSON file; its tuning metric is a known function of its hyperparameters,
``(log10(learning_rate) + 2.2)**2 + |hidden_units - 64| / 100`` (best at 0.01 and 64,
no two of the test grid's points equal),
reported in cloudml-hypertune's file format. Hyperparameters ``fail=true`` make it exit
with status 3 and ``sleep_s`` keeps it running; in a cluster with parameter servers its
worker and ps replicas serve until stopped, as TensorFlow's servers do. Each replica
records what it was told (and its pid) under ``<AIP_MODEL_DIR>/../replicas/``. Outside a
tuning trial the chief publishes ``model-trained`` when a Pub/Sub emulator is configured,
as the real trainer does.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cascade.core.job_spec import TrainingJobSpec
from cascade.localcloud.trial_metrics import write_trial_metric


def metric_of(hyperparameters: dict[str, Any]) -> float:
    learning_rate = float(hyperparameters.get("learning_rate", 0.001))
    units = float(hyperparameters.get("hidden_units", 64))
    return (math.log10(learning_rate) + 2.2) ** 2 + abs(units - 64) / 100


def _parse(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(value.lower(), value)


def _read(uri: str) -> bytes:
    if uri.startswith("gs://"):
        from google.cloud import storage

        from cascade.core.clients import make_storage_client
        from cascade.core.settings import Settings

        client: storage.Client = make_storage_client(Settings())
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        return bytes(client.bucket(bucket).blob(name).download_as_bytes())
    return Path(uri).read_bytes()


def _write(uri: str, data: bytes) -> None:
    if uri.startswith("gs://"):
        from cascade.core.clients import make_storage_client
        from cascade.core.settings import Settings

        bucket, _, name = uri.removeprefix("gs://").partition("/")
        make_storage_client(Settings()).bucket(bucket).blob(name).upload_from_string(data)
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(data)


def _publish_model_trained(spec: TrainingJobSpec, model_dir: str) -> None:
    from cascade.core.bus import MessageBus
    from cascade.core.clients import make_publisher
    from cascade.core.messages import ModelTrained
    from cascade.core.settings import Settings

    settings = Settings()
    MessageBus(make_publisher(settings), settings).publish(
        ModelTrained(
            dataset=spec.dataset,
            run_id=spec.run_id,
            job_name=os.environ.get("CASCADE_JOB_NAME"),
            model_uri=model_dir,
            metrics_uri=f"{model_dir.rstrip('/').removesuffix('/model')}/metrics.json",
        )
    )


CLUSTER_WAIT_S = 120.0


def _wait_for_cluster(replicas: Path, cluster: dict[str, list[str]]) -> None:
    """As a real coordinator, which cannot finish before it reaches its workers and
    parameter servers: wait until every other replica has recorded itself (local
    output folders only), at most ``CLUSTER_WAIT_S``."""
    if str(replicas).startswith("gs:"):
        return
    expected = {
        f"{kind}-{index}"
        for kind in ("worker", "ps")
        for index in range(len(cluster.get(kind, [])))
    }
    deadline = time.monotonic() + CLUSTER_WAIT_S
    while time.monotonic() < deadline:
        present = {path.stem for path in replicas.glob("*.json")}
        if expected <= present:
            return
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv)
    spec = TrainingJobSpec.model_validate_json(_read(flags.pop("job-spec-uri")))
    hyperparameters = {**spec.hyperparameters, **{k: _parse(v) for k, v in flags.items()}}
    model_dir = os.environ["AIP_MODEL_DIR"].rstrip("/")
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {"type": "chief", "index": 0})
    told = {
        "hyperparameters": hyperparameters,
        "tf_config": tf_config,
        "trial_id": os.environ.get("CLOUD_ML_TRIAL_ID"),
        "job_id": os.environ.get("CLOUD_ML_JOB_ID"),
        "environment": {
            name: os.environ[name]
            for name in sorted(os.environ)
            if name.startswith(("AIP_", "CLOUD_ML_")) or name == "CLUSTER_SPEC"
        },
        "transform_spec_uri": spec.transform_spec_uri,
        "pid": os.getpid(),
    }
    replicas = f"{model_dir.removesuffix('/model')}/replicas/{task['type']}-{task['index']}.json"
    _write(replicas, json.dumps(told).encode())
    if "ps" in tf_config.get("cluster", {}) and task["type"] in ("worker", "ps"):
        threading.Event().wait()  # as tf.distribute.Server.join(): serves until stopped
    if "ps" in tf_config.get("cluster", {}) and task["type"] == "chief":
        _wait_for_cluster(Path(replicas).parent, tf_config["cluster"])
    time.sleep(float(hyperparameters.get("sleep_s", 0)))
    if hyperparameters.get("fail"):
        print("failing as asked", file=sys.stderr)
        return 3
    metric = metric_of(hyperparameters)
    if task["type"] != "chief":
        return 0
    _write(f"{model_dir}/model.json", json.dumps({"metric": metric, **told}).encode())
    metric_file = os.environ.get("CLOUD_ML_HP_METRIC_FILE")
    if metric_file:
        tag = os.environ.get("CLOUD_ML_HP_METRIC_TAG") or (
            spec.tuning.metric if spec.tuning else "eval_loss"
        )
        write_trial_metric(
            Path(metric_file), tag, metric + 0.5, trial=told["trial_id"] or "", step=1
        )
        write_trial_metric(Path(metric_file), tag, metric, trial=told["trial_id"] or "", step=2)
    elif os.environ.get("PUBSUB_EMULATOR_HOST"):
        _publish_model_trained(spec, model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
