"""Training and tuning jobs on Vertex AI, through the JobService API (google-cloud-aiplatform).

A ``TrainingJobSpec`` becomes a ``CustomJob``: one worker pool for the chief and, for
multi-worker training, a second for the workers (Vertex AI sets ``TF_CONFIG`` with
``chief`` and ``worker`` tasks) and, for parameter-server training, a third for the
parameter servers (``ps`` tasks); every pool runs the same trainer image, ``python -m
cascade.trainer.task --job-spec-uri …``, as the jobs service account, with the
``CASCADE_*`` runtime settings in its environment so it can publish ``model-trained``;
``base_output_directory`` is the spec's output dir (Vertex AI derives ``AIP_MODEL_DIR``,
``AIP_CHECKPOINT_DIR`` and ``AIP_TENSORBOARD_LOG_DIR`` from it and, for tuning, one
sub-folder per trial: ``cascade.core.vertex_job_env``). A spec with ``tuning`` becomes a
``HyperparameterTuningJob`` whose trials run that CustomJob spec, with a StudySpec built
from the TuningSpec (Bayesian optimisation is Vertex AI's default algorithm).

Idempotency: display names are derived from the run id and every job carries the run
id as a label; ``submit`` looks for a job with both before creating one, so a submit
repeated after a crash returns the job created the first time.

The API is called directly (``JobServiceClient``), not through the SDK's
``CustomJob.run``, which polls in a thread for as long as the job runs — a Cloud
Function must return once the job is created.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import aiplatform_v1 as vertex
from google.protobuf import duration_pb2

from cascade.core import vertex_job_env
from cascade.core.errors import (
    TRANSIENT_ERRORS,
    InvalidConfigError,
    TransientError,
    UnknownJobError,
)
from cascade.core.job_spec import (
    JobState,
    JobStatus,
    ParameterSpec,
    TrainingJobSpec,
    TuningSpec,
    WorkerPool,
    category_text,
)
from cascade.core.settings import Settings
from cascade.jobs.records import RUN_ID_LABEL, label_value

__all__ = [
    "TRAINER_COMMAND",
    "VERTEX_TENSORBOARD_ENV",
    "VertexJobRunner",
    "custom_job_spec",
    "experiments_environment",
    "study_spec",
]

TRAINER_COMMAND = ["python", "-m", "cascade.trainer.task"]
ResultT = TypeVar("ResultT")

_STATES: dict[int, JobState] = {
    vertex.JobState.JOB_STATE_QUEUED: "queued",
    vertex.JobState.JOB_STATE_PENDING: "queued",
    vertex.JobState.JOB_STATE_RUNNING: "running",
    vertex.JobState.JOB_STATE_UPDATING: "running",
    vertex.JobState.JOB_STATE_PAUSED: "running",
    vertex.JobState.JOB_STATE_CANCELLING: "running",
    vertex.JobState.JOB_STATE_SUCCEEDED: "succeeded",
    vertex.JobState.JOB_STATE_PARTIALLY_SUCCEEDED: "succeeded",
    vertex.JobState.JOB_STATE_FAILED: "failed",
    vertex.JobState.JOB_STATE_EXPIRED: "failed",
    vertex.JobState.JOB_STATE_CANCELLED: "cancelled",
}
_ALGORITHMS = {
    "grid": vertex.StudySpec.Algorithm.GRID_SEARCH,
    "random": vertex.StudySpec.Algorithm.RANDOM_SEARCH,
    "bayesian": vertex.StudySpec.Algorithm.ALGORITHM_UNSPECIFIED,  # Vertex AI's default
}
_SCALES = {  # a numeric parameter without a scale is sent as linear; categorical, unscaled
    "linear": vertex.StudySpec.ParameterSpec.ScaleType.UNIT_LINEAR_SCALE,
    "log": vertex.StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE,
    "reverse_log": vertex.StudySpec.ParameterSpec.ScaleType.UNIT_REVERSE_LOG_SCALE,
}
_GOALS = {
    "minimize": vertex.StudySpec.MetricSpec.GoalType.MINIMIZE,
    "maximize": vertex.StudySpec.MetricSpec.GoalType.MAXIMIZE,
}
_REFUSED = (
    gexc.InvalidArgument,
    gexc.PermissionDenied,
    gexc.FailedPrecondition,
    gexc.Unauthenticated,
)


VERTEX_TENSORBOARD_ENV = "CASCADE_VERTEX_TENSORBOARD"
"""Names the Vertex AI TensorBoard in a job's environment (``Settings.vertex_tensorboard``):
the trainer logs to Vertex AI Experiments exactly when it is there."""


def experiments_environment(settings: Settings) -> dict[str, str]:
    """What a Vertex AI job's worker pools add to their environment so the trainer logs to
    Vertex AI Experiments (``cascade.trainer.vertex_experiments``): the TensorBoard a cloud
    deployment names. Empty when the setting is unset (the local cloud never sets it), so a
    job spec without it is exactly what it was before."""
    if settings.vertex_tensorboard is None:
        return {}
    return {VERTEX_TENSORBOARD_ENV: settings.vertex_tensorboard}


def _runtime_environment(settings: Settings) -> list[vertex.EnvVar]:
    """What the trainer needs to read artifacts and publish ``model-trained``."""
    values = {
        "CASCADE_PROJECT": settings.project,
        "CASCADE_REGION": settings.region,
        "CASCADE_LANDING_BUCKET": settings.landing_bucket,
        "CASCADE_ARTIFACTS_BUCKET": settings.artifacts_bucket,
        "CASCADE_TOPIC_PREFIX": settings.topic_prefix,
        **experiments_environment(settings),
    }
    return [vertex.EnvVar(name=name, value=value) for name, value in values.items()]


def _machine(pool: WorkerPool) -> vertex.MachineSpec:
    if pool.accelerator_type and pool.accelerator_count:
        return vertex.MachineSpec(
            machine_type=pool.machine_type,
            accelerator_type=pool.accelerator_type,
            accelerator_count=pool.accelerator_count,
        )
    return vertex.MachineSpec(machine_type=pool.machine_type)


def _worker_pool(pool: WorkerPool, container: vertex.ContainerSpec) -> vertex.WorkerPoolSpec:
    return vertex.WorkerPoolSpec(
        machine_spec=_machine(pool), replica_count=pool.replica_count, container_spec=container
    )


def custom_job_spec(
    spec: TrainingJobSpec, settings: Settings, *, timeout_s: int
) -> vertex.CustomJobSpec:
    """The CustomJobSpec of a training run (also the trial spec of a tuning job)."""
    if not settings.trainer_image:
        raise InvalidConfigError("CASCADE_TRAINER_IMAGE is not set: no trainer image to run")
    if not settings.jobs_service_account:
        raise InvalidConfigError("CASCADE_JOBS_SERVICE_ACCOUNT is not set: jobs need an identity")
    container = vertex.ContainerSpec(
        image_uri=settings.trainer_image,
        command=list(TRAINER_COMMAND),
        args=[f"--job-spec-uri={spec.job_spec_uri}"],
        env=_runtime_environment(settings),
    )
    pools = [_worker_pool(spec.chief, container)]
    if spec.workers is not None:
        pools.append(_worker_pool(spec.workers, container))
    if spec.parameter_servers is not None:  # pool 2: TF_CONFIG task type "ps"
        pools.append(_worker_pool(spec.parameter_servers, container))
    return vertex.CustomJobSpec(
        worker_pool_specs=pools,
        service_account=settings.jobs_service_account,
        base_output_directory=vertex.GcsDestination(output_uri_prefix=spec.output_dir),
        scheduling=vertex.Scheduling(timeout=duration_pb2.Duration(seconds=timeout_s)),
    )


def _parameter(parameter: ParameterSpec) -> vertex.StudySpec.ParameterSpec:
    Spec = vertex.StudySpec.ParameterSpec  # noqa: N806 - the proto class, by its name
    fields: dict[str, Any] = {"parameter_id": parameter.name}
    if parameter.type == "double":
        fields["double_value_spec"] = Spec.DoubleValueSpec(
            min_value=parameter.min, max_value=parameter.max
        )
    elif parameter.type == "integer":
        fields["integer_value_spec"] = Spec.IntegerValueSpec(
            min_value=int(parameter.min or 0), max_value=int(parameter.max or 0)
        )
    elif parameter.type == "discrete":  # numbers, increasing: ParameterSpec checked them
        fields["discrete_value_spec"] = Spec.DiscreteValueSpec(
            values=[float(value) for value in parameter.values]
        )
    else:
        fields["categorical_value_spec"] = Spec.CategoricalValueSpec(
            values=[category_text(value) for value in parameter.values]
        )
    if parameter.type != "categorical":
        fields["scale_type"] = _SCALES[parameter.scale or "linear"]
    return Spec(**fields)


def study_spec(tuning: TuningSpec) -> vertex.StudySpec:
    return vertex.StudySpec(
        metrics=[vertex.StudySpec.MetricSpec(metric_id=tuning.metric, goal=_GOALS[tuning.goal])],
        parameters=[_parameter(parameter) for parameter in tuning.parameters],
        algorithm=_ALGORITHMS[tuning.algorithm],
        measurement_selection_type=vertex.StudySpec.MeasurementSelectionType.BEST_MEASUREMENT,
    )


class VertexJobRunner:
    """``JobRunner`` on Vertex AI. ``client_factory`` builds the (regional) JobServiceClient."""

    publishes_tuning_result = False

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], vertex.JobServiceClient],
        *,
        timeout_s: int = 7 * 24 * 3600,
    ) -> None:
        self._settings = settings
        self._client_factory = client_factory
        self._client: vertex.JobServiceClient | None = None
        self._timeout_s = timeout_s
        self.parent = f"projects/{settings.project}/locations/{settings.region}"

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: int) -> VertexJobRunner:
        endpoint = f"{settings.region}-aiplatform.googleapis.com"
        return cls(
            settings,
            lambda: vertex.JobServiceClient(client_options={"api_endpoint": endpoint}),
            timeout_s=timeout_s,
        )

    @property
    def client(self) -> vertex.JobServiceClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def submit(self, spec: TrainingJobSpec, *, request_id: str) -> str:
        """Create the job unless one with this run's label and display name exists.

        ``request_id`` is the run id in Cascade; the run-id label carries it.
        """
        existing = self._find_existing(spec, tuning=spec.tuning is not None)
        if existing is not None:
            return existing
        job_spec = custom_job_spec(spec, self._settings, timeout_s=self._timeout_s)
        if spec.tuning is None:
            job = vertex.CustomJob(
                display_name=spec.display_name, job_spec=job_spec, labels=dict(spec.labels)
            )
            created = self._call(
                "creating",
                lambda: self.client.create_custom_job(parent=self.parent, custom_job=job),
            )
            return str(created.name)
        tuning_job = vertex.HyperparameterTuningJob(
            display_name=spec.display_name,
            study_spec=study_spec(spec.tuning),
            max_trial_count=spec.tuning.max_trials,
            parallel_trial_count=spec.tuning.parallel_trials,
            trial_job_spec=job_spec,
            labels=dict(spec.labels),
        )
        created_tuning = self._call(
            "creating",
            lambda: self.client.create_hyperparameter_tuning_job(
                parent=self.parent, hyperparameter_tuning_job=tuning_job
            ),
        )
        return str(created_tuning.name)

    def _find_existing(self, spec: TrainingJobSpec, *, tuning: bool) -> str | None:
        run_label = spec.labels.get(RUN_ID_LABEL, label_value(spec.run_id))
        request = {
            "parent": self.parent,
            "filter": f'labels.{RUN_ID_LABEL}="{run_label}" AND display_name="{spec.display_name}"',
        }
        lister: Callable[[], Iterable[Any]] = (
            (lambda: self.client.list_hyperparameter_tuning_jobs(request=request))
            if tuning
            else (lambda: self.client.list_custom_jobs(request=request))
        )
        found = self._call("listing", lambda: list(lister()))
        return str(found[0].name) if found else None

    def get(self, name: str) -> JobStatus:
        if "/hyperparameterTuningJobs/" in name:
            tuning_job = self._call(
                "reading", lambda: self.client.get_hyperparameter_tuning_job(name=name)
            )
            return tuning_status(tuning_job)
        job = self._call("reading", lambda: self.client.get_custom_job(name=name))
        return JobStatus(
            name=name,
            state=_STATES.get(job.state, "queued"),
            error=job.error.message,
            model_dir=vertex_job_env.model_uri(
                job.job_spec.base_output_directory.output_uri_prefix
            ),
            created_at=job.create_time or None,
            finished_at=job.end_time or None,
        )

    def cancel(self, name: str) -> None:
        if "/hyperparameterTuningJobs/" in name:
            self._call(
                "cancelling", lambda: self.client.cancel_hyperparameter_tuning_job(name=name)
            )
        else:
            self._call("cancelling", lambda: self.client.cancel_custom_job(name=name))

    def _call(self, action: str, call: Callable[[], ResultT]) -> ResultT:
        try:
            return call()
        except gexc.NotFound as error:
            raise UnknownJobError(f"Vertex AI: {error}") from error
        except _REFUSED as error:
            raise InvalidConfigError(f"Vertex AI refused {action} the job: {error}") from error
        except TRANSIENT_ERRORS as error:
            raise TransientError(f"Vertex AI {action} the job: {error}") from error


def tuning_status(job: vertex.HyperparameterTuningJob) -> JobStatus:
    """The job's state and, once trials have measurements, its best trial."""
    status = JobStatus(
        name=job.name,
        state=_STATES.get(job.state, "queued"),
        error=job.error.message,
        created_at=job.create_time or None,
        finished_at=job.end_time or None,
    )
    best = _best_trial(job)
    if best is None:
        return status
    trial, value = best
    base = job.trial_job_spec.base_output_directory.output_uri_prefix
    return status.model_copy(
        update={
            "model_dir": vertex_job_env.model_uri(base, str(trial.id)),
            "best_trial_id": str(trial.id),
            "best_metric": value,
            "best_hyperparameters": {p.parameter_id: p.value for p in trial.parameters},
        }
    )


def _best_trial(job: vertex.HyperparameterTuningJob) -> tuple[vertex.Trial, float] | None:
    if not job.study_spec.metrics:
        return None
    metric = job.study_spec.metrics[0]
    maximize = metric.goal == vertex.StudySpec.MetricSpec.GoalType.MAXIMIZE
    scored = [
        (trial, measured.value)
        for trial in job.trials
        if trial.state == vertex.Trial.State.SUCCEEDED
        for measured in trial.final_measurement.metrics
        if measured.metric_id == metric.metric_id
    ]
    if not scored:
        return None
    return (max if maximize else min)(scored, key=lambda pair: pair[1])
