"""Vertex AI's job environment, against the documented values.

``CustomJobSpec.base_output_directory`` (Vertex AI API reference): "The following Vertex
AI environment variables will be passed to containers or python modules when this field
is set: For CustomJob: AIP_MODEL_DIR = <base_output_directory>/model/, AIP_CHECKPOINT_DIR
= <base_output_directory>/checkpoints/, AIP_TENSORBOARD_LOG_DIR =
<base_output_directory>/logs/. For CustomJob backing a Trial of HyperparameterTuningJob:
AIP_MODEL_DIR = <base_output_directory>/<trial_id>/model/, …/<trial_id>/checkpoints/,
…/<trial_id>/logs/". ``CLUSTER_SPEC`` / ``TF_CONFIG``: Vertex AI's distributed-training
guide (cluster, task type / index / trial, environment "cloud", job).
"""

from __future__ import annotations

import json

import pytest

from cascade.core import vertex_job_env as env

BASE = "gs://arts/runs/credit-abc/training"

DOCUMENTED = [
    # (base output directory, trial id, variable, value)
    (BASE, None, "AIP_MODEL_DIR", f"{BASE}/model/"),
    (BASE, None, "AIP_CHECKPOINT_DIR", f"{BASE}/checkpoints/"),
    (BASE, None, "AIP_TENSORBOARD_LOG_DIR", f"{BASE}/logs/"),
    (BASE, "3", "AIP_MODEL_DIR", f"{BASE}/3/model/"),
    (BASE, "3", "AIP_CHECKPOINT_DIR", f"{BASE}/3/checkpoints/"),
    (BASE, "3", "AIP_TENSORBOARD_LOG_DIR", f"{BASE}/3/logs/"),
    (f"{BASE}/", None, "AIP_MODEL_DIR", f"{BASE}/model/"),
    (f"{BASE}/", "12", "AIP_TENSORBOARD_LOG_DIR", f"{BASE}/12/logs/"),
]


@pytest.mark.parametrize(("base", "trial", "name", "value"), DOCUMENTED)
def test_output_directories_are_the_documented_ones(
    base: str, trial: str | None, name: str, value: str
) -> None:
    assert env.output_environment(base, trial)[name] == value


def test_exactly_the_three_directories_are_set() -> None:
    assert set(env.output_environment(BASE)) == {
        "AIP_MODEL_DIR",
        "AIP_CHECKPOINT_DIR",
        "AIP_TENSORBOARD_LOG_DIR",
    }


def test_recorded_uris_and_the_run_base_read_back_from_aip_model_dir() -> None:
    assert env.model_uri(BASE) == f"{BASE}/model"
    assert env.model_uri(BASE, "3") == f"{BASE}/3/model"
    assert env.tensorboard_log_uri(BASE, "3") == f"{BASE}/3/logs"
    assert env.run_base_of_model_dir(f"{BASE}/3/model/") == f"{BASE}/3"
    assert env.run_base_of_model_dir(f"{BASE}/model") == BASE
    assert env.run_base_of_model_dir("gs://b/elsewhere/") is None


def test_job_identity() -> None:
    assert env.job_environment("42") == {"CLOUD_ML_JOB_ID": "42"}
    assert env.job_environment("42", "3") == {"CLOUD_ML_JOB_ID": "42", "CLOUD_ML_TRIAL_ID": "3"}


def test_one_replica_gets_no_cluster() -> None:
    assert env.cluster_environment([["h:1"]], 0, 0) == {}


def test_a_distributed_trial_gets_tf_config_and_cluster_spec() -> None:
    pools = [["c:1"], ["w:1", "w:2"]]

    variables = env.cluster_environment(pools, 1, 1, trial_id="3")

    assert json.loads(variables["TF_CONFIG"]) == {
        "cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]},
        "task": {"type": "worker", "index": 1, "trial": "3"},
        "environment": "cloud",
        "job": {},
    }
    assert json.loads(variables["CLUSTER_SPEC"]) == {
        "cluster": {"workerpool0": ["c:1"], "workerpool1": ["w:1", "w:2"]},
        "task": {"type": "workerpool1", "index": 1, "trial": "3"},
        "environment": "cloud",
        "job": {},
    }


def test_the_evaluator_pool_is_outside_tf_configs_cluster() -> None:
    pools = [["c:1"], ["w:1"], [], ["e:1"]]

    tf_config = json.loads(env.cluster_environment(pools, 3, 0)["TF_CONFIG"])

    assert tf_config["cluster"] == {"chief": ["c:1"], "worker": ["w:1"]}
    assert tf_config["task"] == {"type": "evaluator", "index": 0}
