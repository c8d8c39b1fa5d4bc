"""Vertex AI's job environment: the variables and paths a training replica is given.

The one place that knows them. The local job service sets exactly these (a strict twin),
and every reader (the trainer's arguments, the run report, ``cascade tensorboard``, the
job runners' model dirs) derives paths from here rather than spelling folder names.

From Vertex AI's reference (``CustomJobSpec.base_output_directory``), set only when the
job has a base output directory (Cascade's jobs always do: ``TrainingJobSpec.output_dir``):

- ``AIP_MODEL_DIR``: ``<base>/model/`` (a trial: ``<base>/<trial id>/model/``);
- ``AIP_CHECKPOINT_DIR``: ``<base>/checkpoints/`` (``<base>/<trial id>/checkpoints/``);
- ``AIP_TENSORBOARD_LOG_DIR``: ``<base>/logs/`` (``<base>/<trial id>/logs/``)

(a trial's CustomJob has ``<base>/<trial id>`` as its own base output directory). Also:

- ``CLOUD_ML_JOB_ID``: the job's id (the SDK's ``training_utils.environment_variables``);
- ``CLOUD_ML_TRIAL_ID``: a tuning trial's id (numbered from 1; what cloudml-hypertune reads);
- ``TF_CONFIG`` and ``CLUSTER_SPEC`` on every replica of a distributed job (several
  replicas): ``{"cluster": …, "task": {"type", "index"[, "trial"]}, "environment":
  "cloud", "job": …}``; ``TF_CONFIG`` names worker pools 0-2 ``chief``, ``worker``,
  ``ps`` (pool 3, the evaluator, is not part of its cluster); ``CLUSTER_SPEC`` names
  them ``workerpool0``…``workerpool3``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = [
    "AIP_CHECKPOINT_DIR",
    "AIP_MODEL_DIR",
    "AIP_TENSORBOARD_LOG_DIR",
    "CHECKPOINT_FOLDER",
    "CLOUD_ML_JOB_ID",
    "CLOUD_ML_TRIAL_ID",
    "CLUSTER_SPEC",
    "LOG_FOLDER",
    "MODEL_FOLDER",
    "TF_CONFIG",
    "checkpoint_dir",
    "cluster_environment",
    "job_environment",
    "model_dir",
    "model_uri",
    "output_environment",
    "run_base",
    "run_base_of_model_dir",
    "tensorboard_log_dir",
    "tensorboard_log_uri",
]

AIP_MODEL_DIR = "AIP_MODEL_DIR"
AIP_CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
AIP_TENSORBOARD_LOG_DIR = "AIP_TENSORBOARD_LOG_DIR"
CLOUD_ML_JOB_ID = "CLOUD_ML_JOB_ID"
CLOUD_ML_TRIAL_ID = "CLOUD_ML_TRIAL_ID"
TF_CONFIG = "TF_CONFIG"
CLUSTER_SPEC = "CLUSTER_SPEC"

MODEL_FOLDER = "model"
CHECKPOINT_FOLDER = "checkpoints"
LOG_FOLDER = "logs"

_TF_TASK_TYPES = ("chief", "worker", "ps", "evaluator")
"""TF_CONFIG's task type of worker pools 0, 1, 2 and 3."""
_OUTSIDE_TF_CLUSTER = frozenset({"evaluator"})


def run_base(base_output_directory: str, trial_id: str | None = None) -> str:
    """The base output directory of one run: the job's, or ``<base>/<trial id>`` for a trial."""
    base = base_output_directory.rstrip("/")
    return f"{base}/{trial_id}" if trial_id else base


def model_dir(base_output_directory: str, trial_id: str | None = None) -> str:
    """``AIP_MODEL_DIR`` as Vertex AI sets it: ``<run base>/model/``."""
    return f"{run_base(base_output_directory, trial_id)}/{MODEL_FOLDER}/"


def checkpoint_dir(base_output_directory: str, trial_id: str | None = None) -> str:
    """``AIP_CHECKPOINT_DIR``: ``<run base>/checkpoints/``."""
    return f"{run_base(base_output_directory, trial_id)}/{CHECKPOINT_FOLDER}/"


def tensorboard_log_dir(base_output_directory: str, trial_id: str | None = None) -> str:
    """``AIP_TENSORBOARD_LOG_DIR``: ``<run base>/logs/``."""
    return f"{run_base(base_output_directory, trial_id)}/{LOG_FOLDER}/"


def model_uri(base_output_directory: str, trial_id: str | None = None) -> str:
    """The model dir as Cascade records it (job status, ``model-trained``): no final slash."""
    return model_dir(base_output_directory, trial_id).rstrip("/")


def tensorboard_log_uri(base_output_directory: str, trial_id: str | None = None) -> str:
    """The TensorBoard log dir as Cascade records it: no final slash."""
    return tensorboard_log_dir(base_output_directory, trial_id).rstrip("/")


def run_base_of_model_dir(aip_model_dir: str) -> str | None:
    """The run base of an ``AIP_MODEL_DIR`` (``<run base>/model/``); None in another layout."""
    trimmed = aip_model_dir.rstrip("/")
    suffix = f"/{MODEL_FOLDER}"
    if not trimmed.endswith(suffix) or trimmed == suffix:
        return None
    return trimmed.removesuffix(suffix)


def output_environment(base_output_directory: str, trial_id: str | None = None) -> dict[str, str]:
    """The ``AIP_*`` directories of a job (``trial_id`` None) or of one tuning trial."""
    return {
        AIP_MODEL_DIR: model_dir(base_output_directory, trial_id),
        AIP_CHECKPOINT_DIR: checkpoint_dir(base_output_directory, trial_id),
        AIP_TENSORBOARD_LOG_DIR: tensorboard_log_dir(base_output_directory, trial_id),
    }


def job_environment(job_id: str, trial_id: str | None = None) -> dict[str, str]:
    """``CLOUD_ML_JOB_ID`` and, for a tuning trial, ``CLOUD_ML_TRIAL_ID``."""
    env = {CLOUD_ML_JOB_ID: job_id}
    if trial_id:
        env[CLOUD_ML_TRIAL_ID] = trial_id
    return env


def cluster_environment(
    pools: Sequence[Sequence[str]],
    pool_index: int,
    replica_index: int,
    *,
    trial_id: str | None = None,
) -> dict[str, str]:
    """``TF_CONFIG`` and ``CLUSTER_SPEC`` of replica ``replica_index`` of worker pool
    ``pool_index``; ``pools`` lists each worker pool's replica addresses (pool 0 first).

    Set only for a distributed job (more than one replica in all); ``{}`` otherwise.
    """
    if len(pools) > len(_TF_TASK_TYPES):
        raise ValueError(f"Vertex AI has {len(_TF_TASK_TYPES)} worker pools, not {len(pools)}")
    if not 0 <= replica_index < len(pools[pool_index]):
        raise ValueError(f"worker pool {pool_index} has no replica {replica_index}")
    if sum(len(addresses) for addresses in pools) < 2:
        return {}
    tf_cluster = {
        _TF_TASK_TYPES[index]: list(addresses)
        for index, addresses in enumerate(pools)
        if addresses and _TF_TASK_TYPES[index] not in _OUTSIDE_TF_CLUSTER
    }
    spec_cluster = {
        f"workerpool{index}": list(addresses) for index, addresses in enumerate(pools) if addresses
    }
    trial = {"trial": trial_id} if trial_id else {}
    tf_task = {"type": _TF_TASK_TYPES[pool_index], "index": replica_index, **trial}
    spec_task = {"type": f"workerpool{pool_index}", "index": replica_index, **trial}
    return {
        TF_CONFIG: json.dumps(
            {"cluster": tf_cluster, "task": tf_task, "environment": "cloud", "job": {}}
        ),
        CLUSTER_SPEC: json.dumps(
            {"cluster": spec_cluster, "task": spec_task, "environment": "cloud", "job": {}}
        ),
    }
