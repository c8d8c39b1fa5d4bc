"""The TrainingJobSpec of a run: config sections, request overrides, the transform to use."""

from __future__ import annotations

from cascade.core.errors import BadRequestError
from cascade.core.hyperparameters import family_problem
from cascade.core.job_spec import (
    HyperparameterValue,
    ModelModule,
    ParameterServerSpec,
    TrainingJobSpec,
    TuningSpec,
    WorkerPool,
)
from cascade.core.pipeline_config import PipelineConfig
from cascade.core.store import ArtifactStore
from cascade.jobs.records import DATASET_LABEL, RUN_ID_LABEL, display_name_for, label_value
from cascade.transform.catalog import latest_transform, read_transform, transform_spec_name
from cascade.transform.spec import HashTransform, TransformSpec, VocabularyTransform

__all__ = [
    "build_job_spec",
    "check_tuning",
    "embedding_table_rows",
    "read_run_transform",
    "resolve_transform_uri",
]


def resolve_transform_uri(store: ArtifactStore, *, run_id: str, dataset: str) -> str:
    """The run's own transform, else the dataset's latest (a retrain or a follow-up)."""
    if read_transform(store, run_id) is not None:
        return store.uri(transform_spec_name(run_id))
    pointer = latest_transform(store, dataset)
    if pointer is None:
        raise BadRequestError(
            f"dataset {dataset} has no transformed data yet: upload a data file first"
        )
    return pointer.transform_uri


def read_run_transform(store: ArtifactStore, *, run_id: str, dataset: str) -> TransformSpec | None:
    """The transform spec ``resolve_transform_uri`` names (the run's own, else the
    dataset's latest), for ``build_job_spec(transform=...)``; None when there is none."""
    own = read_transform(store, run_id)
    if own is not None:
        return own
    pointer = latest_transform(store, dataset)
    return None if pointer is None else read_transform(store, pointer.run_id)


def check_tuning(tuning: TuningSpec) -> TuningSpec:
    """Fewer parallel trials than trials. (What Vertex AI refuses, a grid over a double
    parameter included, the TuningSpec itself refuses: ``ParameterSpec``.)"""
    if tuning.parallel_trials > tuning.max_trials:
        return tuning.model_copy(update={"parallel_trials": tuning.max_trials})
    return tuning


def embedding_table_rows(transform: TransformSpec) -> dict[str, int]:
    """The rows of each categorical feature's embedding table: its one-hot width (OOV
    slots and vocabulary, or hash buckets)."""
    return {
        feature.name: (
            feature.num_oov_buckets + len(feature.vocabulary)
            if isinstance(feature, VocabularyTransform)
            else feature.hash_buckets
        )
        for feature in transform.features
        if isinstance(feature, VocabularyTransform | HashTransform)
    }


def _worker_pools(
    config: PipelineConfig, *, parameter_servers: bool
) -> tuple[WorkerPool, WorkerPool | None, WorkerPool | None]:
    """Chief, workers and parameter servers (Vertex AI's worker pools 0, 1 and 2).

    Data parallel: the chief trains too, so ``workers - 1`` more. Parameter servers: the
    chief coordinates, ``workers`` compute the steps, and the parameter servers (no
    accelerators: they hold and update variables) run on the same machine type."""
    training = config.training
    machine = {
        "machine_type": training.machine_type,
        "accelerator_type": training.accelerator_type,
        "accelerator_count": training.accelerator_count if training.accelerator_type else 0,
    }
    chief = WorkerPool(replica_count=1, **machine)
    if parameter_servers:
        workers = WorkerPool(replica_count=training.workers, **machine)
        servers = WorkerPool(
            machine_type=training.machine_type, replica_count=training.parameter_servers
        )
        return chief, workers, servers
    if training.workers == 1:
        return chief, None, None
    return chief, WorkerPool(replica_count=training.workers - 1, **machine), None


def build_job_spec(
    *,
    run_id: str,
    dataset: str,
    transform_spec_uri: str,
    output_dir: str,
    config: PipelineConfig,
    hyperparameters: dict[str, HyperparameterValue],
    tune: bool,
    baseline_model_uri: str | None = None,
    model_module: ModelModule | None = None,
    transform: TransformSpec | None = None,
) -> TrainingJobSpec:
    """``hyperparameters`` (the request's) override the config's; ``tune`` or
    ``tuning.enabled`` makes it a tuning job over the config's search space (the model
    family's own by default); ``baseline_model_uri`` is the deployed model the trainer
    also evaluates; ``model_module`` is the pinned user module of ``model: custom``;
    ``transform`` (the spec at ``transform_spec_uri``) sizes the embedding tables that
    ``distribution: auto`` weighs (without it, auto stays data parallel)."""
    training = config.training
    problem = family_problem(training.model, list(hyperparameters))
    if problem:
        raise BadRequestError(f"hyperparameters: {problem}")
    tuning = None
    if tune or config.tuning.enabled:
        try:
            tuning = check_tuning(config.tuning.study(training.model))
        except ValueError as error:
            raise BadRequestError(str(error)) from None
    table_rows = embedding_table_rows(transform) if transform is not None else {}
    sharded = training.uses_parameter_servers(table_rows)
    if sharded and tuning is not None:
        raise BadRequestError(
            "tuning runs trials on one worker pool each; parameter-server training cannot "
            "be tuned: set training.distribution to data_parallel to tune"
        )
    chief, workers, servers = _worker_pools(config, parameter_servers=sharded)
    sharding = None
    if sharded:
        sharding = ParameterServerSpec(
            embedding_dim=training.embedding_dim, min_shard_bytes=training.min_shard_bytes
        )
    return TrainingJobSpec(
        run_id=run_id,
        dataset=dataset,
        display_name=display_name_for(run_id, tuning=tuning is not None),
        transform_spec_uri=transform_spec_uri,
        output_dir=output_dir,
        model=training.model,
        model_module=model_module,
        hyperparameters={**training.hyperparameters, **hyperparameters},
        epochs=training.epochs,
        batch_size=training.batch_size,
        early_stopping_patience=training.early_stopping_patience,
        slice_features=list(training.slice_features),
        chief=chief,
        workers=workers,
        parameter_servers=servers,
        sharding=sharding,
        tuning=tuning,
        baseline_model_uri=baseline_model_uri,
        labels={RUN_ID_LABEL: label_value(run_id), DATASET_LABEL: label_value(dataset)},
    )
