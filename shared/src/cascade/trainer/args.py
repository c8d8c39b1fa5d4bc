"""``TrainerArgs``: everything a trainer run is told, read once at the entry point.

Vertex AI (and the local job runner, which mimics it) tells a trainer what to do through
the command line and environment variables:

- ``--job-spec-uri gs://…/job_spec.json``: the ``TrainingJobSpec`` of the run;
- ``--<name>=<value>``: hyperparameters; Vertex AI tuning passes each trial's parameters
  this way, and they override ``job_spec.hyperparameters``;
- ``AIP_MODEL_DIR`` (``<base>/model/``), ``AIP_CHECKPOINT_DIR`` (``<base>/checkpoints/``),
  ``AIP_TENSORBOARD_LOG_DIR`` (``<base>/logs/``): the model, backups, TensorBoard logs;
  ``<base>`` is the job's base output directory, ``<base>/<trial id>`` for a trial
  (``cascade.core.vertex_job_env`` owns the layout);
- ``TF_CONFIG``: the cluster (chief, workers, and ps tasks for parameter-server training)
  and this process's task in it;
- ``CLOUD_ML_TRIAL_ID``: set for hyperparameter-tuning trials;
  ``CLOUD_ML_HP_METRIC_FILE`` (the local runner's per-trial file; on Vertex AI unset, so
  cloudml-hypertune's default) and ``CLOUD_ML_HP_METRIC_TAG`` (when set; else the job
  spec's metric) say where and under which name the tuning metric is written;
- ``CASCADE_JOB_NAME`` (the local runner's full job name) or ``CLOUD_ML_JOB_ID``
  (Vertex AI): the job name carried by ``model-trained``.

Only ``from_command_line`` sees the environment; everything downstream gets the object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cascade.core import vertex_job_env as env
from cascade.core.errors import InvalidConfigError
from cascade.core.job_spec import HyperparameterValue

__all__ = ["ClusterConfig", "TrainerArgs", "parse_hyperparameter_value"]

_FLAG = re.compile(r"^--([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?$", re.DOTALL)
_INTEGER = re.compile(r"^[+-]?\d+$")
_TRAINING_TASK_TYPES = ("chief", "worker")
_CLUSTER_TASK_TYPES = ("chief", "worker", "ps")


def parse_hyperparameter_value(text: str) -> HyperparameterValue:
    """``"64"`` → 64, ``"0.01"``/``"1e-3"`` → float, ``"true"``/``"false"`` → bool, else str."""
    if _INTEGER.fullmatch(text):
        return int(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster of ``TF_CONFIG``: its chief, worker (and ps) addresses, and our task.

    Vertex AI names the first worker pool ``chief`` and the others ``worker``; a cluster
    without a chief treats worker 0 as the chief, as TensorFlow does.
    """

    cluster: dict[str, list[str]]
    task_type: str
    task_index: int

    @classmethod
    def from_tf_config(cls, text: str) -> ClusterConfig:
        try:
            document = json.loads(text)
            cluster = {
                str(kind): [str(address) for address in addresses]
                for kind, addresses in dict(document.get("cluster") or {}).items()
            }
            task = dict(document.get("task") or {})
            task_type = str(task["type"])
            task_index = int(task.get("index", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InvalidConfigError(f"TF_CONFIG is not a valid cluster config: {error}") from None
        if task_type in _CLUSTER_TASK_TYPES and not 0 <= task_index < len(
            cluster.get(task_type, [])
        ):
            raise InvalidConfigError(
                f"TF_CONFIG task {task_type}:{task_index} is not in its cluster {cluster}"
            )
        return cls(cluster=cluster, task_type=task_type, task_index=task_index)

    @property
    def training_cluster(self) -> dict[str, list[str]]:
        """The chief and worker tasks only (an evaluator or parameter server is not ours)."""
        return {kind: self.cluster[kind] for kind in _TRAINING_TASK_TYPES if self.cluster.get(kind)}

    @property
    def parameter_servers(self) -> list[str]:
        """The ``ps`` tasks' addresses (worker pool 2): parameter-server training."""
        return list(self.cluster.get("ps", []))

    @property
    def full_cluster(self) -> dict[str, list[str]]:
        """The chief, worker and ps tasks (what ``ParameterServerStrategy`` connects to)."""
        return {kind: self.cluster[kind] for kind in _CLUSTER_TASK_TYPES if self.cluster.get(kind)}

    @property
    def serves_only(self) -> bool:
        """A worker or ps task of parameter-server training: it runs a TensorFlow server
        that the chief (the coordinator) drives, and nothing else."""
        return bool(self.parameter_servers) and self.task_type in ("worker", "ps")

    @property
    def num_workers(self) -> int:
        return sum(len(addresses) for addresses in self.training_cluster.values())

    @property
    def worker_index(self) -> int:
        """This task's position among chief + workers (the chief, when there is one, is 0)."""
        if self.task_type == "worker" and self.cluster.get("chief"):
            return len(self.cluster["chief"]) + self.task_index
        return self.task_index

    @property
    def is_chief(self) -> bool:
        if self.cluster.get("chief"):
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


@dataclass(frozen=True)
class TrainerArgs:
    """One trainer run: what to train on, where to write, and what this process is.

    Attributes:
        job_spec_uri: gs:// (or local) URI of the ``TrainingJobSpec`` JSON.
        hyperparameter_overrides: ``--name=value`` flags; they win over the job spec's.
        model_dir: ``AIP_MODEL_DIR``; None means the layout's ``<base>/model``.
        tensorboard_dir: ``AIP_TENSORBOARD_LOG_DIR``; None means ``<base>/logs``.
        checkpoint_dir: ``AIP_CHECKPOINT_DIR``; when set, training backs up every epoch there
            and a restarted worker resumes from the backup.
        cluster: ``TF_CONFIG``; None for a single process.
        trial_id: ``CLOUD_ML_TRIAL_ID``; set only for hyperparameter-tuning trials.
        hp_metric_file: ``CLOUD_ML_HP_METRIC_FILE``; where the tuning metric is written.
        hp_metric_tag: ``CLOUD_ML_HP_METRIC_TAG``; the metric's name, else the job spec's.
        job_name: ``CASCADE_JOB_NAME`` or ``CLOUD_ML_JOB_ID``; carried by ``model-trained``.
        storage_emulated: the storage client talks to an emulator (``STORAGE_EMULATOR_HOST``),
            so TensorFlow's own gs:// file system cannot reach the buckets.
    """

    job_spec_uri: str
    hyperparameter_overrides: dict[str, HyperparameterValue] = field(default_factory=dict)
    model_dir: str | None = None
    tensorboard_dir: str | None = None
    checkpoint_dir: str | None = None
    cluster: ClusterConfig | None = None
    trial_id: str | None = None
    hp_metric_file: str | None = None
    hp_metric_tag: str | None = None
    job_name: str | None = None
    storage_emulated: bool = False

    @property
    def is_tuning_trial(self) -> bool:
        return bool(self.trial_id)

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @classmethod
    def from_command_line(cls, argv: Sequence[str], environ: Mapping[str, str]) -> TrainerArgs:
        """Parse ``argv`` (without the program name) and the Vertex AI environment."""
        job_spec_uri, overrides = _parse_flags(argv)
        tf_config = environ.get(env.TF_CONFIG, "").strip()
        return cls(
            job_spec_uri=job_spec_uri,
            hyperparameter_overrides=overrides,
            model_dir=environ.get(env.AIP_MODEL_DIR) or None,
            tensorboard_dir=environ.get(env.AIP_TENSORBOARD_LOG_DIR) or None,
            checkpoint_dir=environ.get(env.AIP_CHECKPOINT_DIR) or None,
            cluster=ClusterConfig.from_tf_config(tf_config) if tf_config else None,
            trial_id=environ.get(env.CLOUD_ML_TRIAL_ID) or None,
            hp_metric_file=environ.get("CLOUD_ML_HP_METRIC_FILE") or None,
            hp_metric_tag=environ.get("CLOUD_ML_HP_METRIC_TAG") or None,
            job_name=environ.get("CASCADE_JOB_NAME") or environ.get(env.CLOUD_ML_JOB_ID) or None,
            storage_emulated=bool(environ.get("STORAGE_EMULATOR_HOST")),
        )


def _parse_flags(argv: Sequence[str]) -> tuple[str, dict[str, HyperparameterValue]]:
    """``--job-spec-uri`` and ``--name=value`` / ``--name value`` hyperparameter flags."""
    values: dict[str, str] = {}
    position = 0
    while position < len(argv):
        match = _FLAG.fullmatch(argv[position])
        if match is None:
            raise InvalidConfigError(f"unexpected argument {argv[position]!r}: use --name=value")
        name, value = match.group(1), match.group(2)
        if value is None:
            if position + 1 >= len(argv) or argv[position + 1].startswith("--"):
                raise InvalidConfigError(f"flag --{name} needs a value")
            value = argv[position + 1]
            position += 1
        if name in values:
            raise InvalidConfigError(f"flag --{name} given twice")
        values[name] = value
        position += 1
    job_spec_uri = values.pop("job-spec-uri", None) or values.pop("job_spec_uri", None)
    if not job_spec_uri:
        raise InvalidConfigError("--job-spec-uri is required (the TrainingJobSpec JSON)")
    overrides = {
        name.replace("-", "_"): parse_hyperparameter_value(value) for name, value in values.items()
    }
    return job_spec_uri, overrides
