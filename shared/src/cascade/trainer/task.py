"""``python -m cascade.trainer.task``: one training run, as Vertex AI or the local runner starts it.

args → strategy (first: TensorFlow requires it before any other op; with parameter
servers after the job spec, whose sharding the strategy's partitioner needs) → job spec and
transform spec → data → model → fit → export (every worker, as multi-worker saving
requires; only the chief's copy is kept and uploaded) → per-epoch history
(``history.json``) and eval metrics of the candidate and the baseline (chief) → tuning
metric (tuning runs) → load-and-probe check in a fresh process (chief) → postcondition:
the model dir has ``saved_model.pb`` → ``model-trained`` (chief; not for tuning trials,
whose best one the tuner picks).

In the cloud the chief also logs the run to Vertex AI Experiments (hyperparameters at the
start, per-epoch curves and eval metrics at the end: ``cascade.trainer.vertex_experiments``,
best effort, never failing the run); locally it does not.

The worker and ps tasks of parameter-server training only run a TensorFlow server for the
chief, the coordinator, which does everything above (``cascade.trainer.parameter_servers``);
they serve until the job service stops them.

Exit status 0 on success; 1 with a one-line reason on stderr when the run failed.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import tensorflow as tf

from cascade.core import vertex_job_env
from cascade.core.bus import MessageBus
from cascade.core.errors import BadInputError, CascadeError, InvalidConfigError, PermanentError
from cascade.core.hyperparameters import (
    Hyperparameters,
    family_hyperparameters,
    own_hyperparameters,
    resolve_hyperparameters,
)
from cascade.core.job_spec import (
    TRAINING_FAILURE_FILE,
    HyperparameterValue,
    TrainingFailure,
    TrainingJobSpec,
)
from cascade.core.messages import ModelTrained
from cascade.core.observability import RunLogger, run_logger
from cascade.trainer.args import TrainerArgs
from cascade.trainer.callbacks import DirectoryUploader, TensorBoardScalars
from cascade.trainer.data import download_shards, target_moments
from cascade.trainer.export import export_serving_model
from cascade.trainer.fit import FitPlan, FitResult, fit_arguments, fit_model, fit_result
from cascade.trainer.history import HISTORY_FILE, training_history
from cascade.trainer.model import (
    CascadeModel,
    TargetScale,
    TrainerModel,
    build_model,
    compile_model,
    output_units,
)
from cascade.trainer.parameter_servers import (
    ShardedTraining,
    shard_devices,
    train_sharded_network,
)
from cascade.trainer.preprocessing import feature_input_dtype
from cascade.trainer.probe import InfraCheck, run_probe_in_subprocess
from cascade.trainer.scoring import (
    EvaluationReport,
    ModelMetrics,
    ServingModel,
    evaluate_model,
    load_eval_table,
)
from cascade.trainer.storage import TrainerStorage, is_gcs_uri, join_uri
from cascade.trainer.strategy import (
    PARAMETER_SERVER,
    StrategyChoice,
    choose_strategy,
    serve_cluster_task,
)
from cascade.trainer.trees import train_boosted_trees
from cascade.trainer.tuning import report_tuning_metric
from cascade.trainer.user_module import (
    ModelContext,
    UserModule,
    check_model,
    load_user_module,
    make_context,
)
from cascade.trainer.vertex_experiments import VertexExperiments
from cascade.transform.spec import TransformSpec

__all__ = ["OutputLocations", "TrainingResult", "main", "output_locations", "read_specs", "run"]

MODEL_FILE = "saved_model.pb"
DEFAULT_TUNING_METRIC = "eval_loss"
ProbeRunner = Callable[[Path, Path], InfraCheck]


@dataclass(frozen=True)
class OutputLocations:
    """Where a run writes: the model, metrics.json, history.json, infra_check.json,
    TensorBoard logs."""

    output_dir: str
    model_dir: str
    tensorboard_dir: str

    @property
    def metrics_uri(self) -> str:
        return join_uri(self.output_dir, "metrics.json")

    @property
    def history_uri(self) -> str:
        return join_uri(self.output_dir, HISTORY_FILE)

    @property
    def infra_check_uri(self) -> str:
        return join_uri(self.output_dir, "infra_check.json")


@dataclass(frozen=True)
class TrainingResult:
    job_spec: TrainingJobSpec
    locations: OutputLocations
    is_chief: bool
    fit: FitResult
    trained: TrainerModel
    report: EvaluationReport | None = None
    infra_check: InfraCheck | None = None
    tuning_metric: tuple[str, float] | None = None
    message_id: str | None = None
    sharded: ShardedTraining | None = None


def output_locations(args: TrainerArgs, job_spec: TrainingJobSpec) -> OutputLocations:
    """Where this run writes, in Vertex AI's layout (``cascade.core.vertex_job_env``).

    ``AIP_MODEL_DIR`` and ``AIP_TENSORBOARD_LOG_DIR`` win; the run's base (metrics.json,
    history.json) is the parent of ``AIP_MODEL_DIR`` (``<base>/model/``; a trial's base
    is ``<output_dir>/<trial id>``). Without them (Vertex AI sets them whenever the job
    has a base output directory) the same layout is derived from the job spec.
    """
    trial_id = args.trial_id or None
    output_dir = vertex_job_env.run_base(job_spec.output_dir, trial_id)
    model_dir = vertex_job_env.model_uri(job_spec.output_dir, trial_id)
    if args.model_dir:
        model_dir = args.model_dir.rstrip("/")
        output_dir = vertex_job_env.run_base_of_model_dir(args.model_dir) or output_dir
    tensorboard_dir = (
        args.tensorboard_dir or vertex_job_env.tensorboard_log_uri(job_spec.output_dir, trial_id)
    ).rstrip("/")
    return OutputLocations(output_dir, model_dir, tensorboard_dir)


def read_specs(storage: TrainerStorage, job_spec_uri: str) -> tuple[TrainingJobSpec, TransformSpec]:
    try:
        job_spec = TrainingJobSpec.model_validate_json(storage.read_bytes(job_spec_uri))
        spec = TransformSpec.model_validate_json(storage.read_bytes(job_spec.transform_spec_uri))
    except ValueError as error:
        raise InvalidConfigError(f"invalid job or transform spec: {error}") from None
    return job_spec, spec


@dataclass(frozen=True)
class _Run:
    """What every stage of one run needs."""

    args: TrainerArgs
    storage: TrainerStorage
    job_spec: TrainingJobSpec
    spec: TransformSpec
    hparams: Hyperparameters
    locations: OutputLocations
    work: Path
    log: RunLogger
    user: UserModule | None = None
    params: dict[str, HyperparameterValue] = field(default_factory=dict)


def run(
    args: TrainerArgs,
    *,
    storage: TrainerStorage,
    bus: MessageBus | None,
    probe: ProbeRunner = run_probe_in_subprocess,
    work_dir: Path | None = None,
    experiments: VertexExperiments | None = None,
) -> TrainingResult:
    """One training run. ``bus`` may be None when nothing is to be published (trials,
    non-chief workers); ``probe`` runs the infra check on the local export directory;
    ``experiments`` (cloud only) is where the chief also logs to Vertex AI Experiments."""
    if args.cluster is not None and args.cluster.serves_only:
        raise InvalidConfigError(
            f"task {args.cluster.task_type}:{args.cluster.task_index} of parameter-server "
            "training only serves the chief (main starts its server)"
        )
    if args.cluster is not None and args.cluster.parameter_servers:
        job_spec, spec = read_specs(storage, args.job_spec_uri)
        choice = choose_strategy(args.cluster, sharding=job_spec.sharding)
    else:
        choice = choose_strategy(args.cluster)
        job_spec, spec = read_specs(storage, args.job_spec_uri)
    family = job_spec.model
    if family in ("boosted_trees", "auto") and choice.worker.count > 1:
        raise InvalidConfigError(
            f"model {family} trains on one machine; {choice.worker.count} workers were started"
        )
    locations = output_locations(args, job_spec)
    log = run_logger("cascade.trainer", run_id=job_spec.run_id, step="train", dataset=spec.dataset)
    with tempfile.TemporaryDirectory(prefix="cascade-trainer-", dir=work_dir) as scratch:
        ctx = _open(args, storage, (job_spec, spec), locations, Path(scratch), log)
        log.info(
            "training %s: model %s with %s (%s, %d replicas)",
            spec.dataset,
            family,
            {**family_hyperparameters(ctx.hparams, family), **ctx.params},
            choice.kind,
            choice.replicas,
        )
        if experiments is not None and args.is_chief:
            _start_experiment_run(ctx, experiments)
        candidates = _train(ctx, choice)
        if not args.is_chief:
            only = candidates[0]
            return TrainingResult(job_spec, locations, False, only.fit, only.trained)
        table = load_eval_table(sorted((ctx.work / "data").glob("eval-*.parquet")), spec.label)
        chosen, comparison = _choose(ctx, candidates, table)
        storage.upload_tree(chosen.export_dir, locations.model_dir)
        _write_history(ctx, chosen.fit)
        report = _evaluate(ctx, chosen, table, comparison)
        tuning_metric = _report_tuning_metric(ctx, report, chosen.fit)
        if experiments is not None:
            _log_experiment_results(experiments, chosen.fit, report)
        check = _probe(ctx, probe, chosen.export_dir)
    _check_postcondition(storage, locations)
    if experiments is not None:
        experiments.end()
    message_id = None
    if bus is not None and not args.is_tuning_trial:
        message = ModelTrained(
            dataset=spec.dataset,
            run_id=job_spec.run_id,
            job_name=args.job_name,
            model_uri=locations.model_dir,
            metrics_uri=locations.metrics_uri,
        )
        message_id = bus.publish(message)
        log.info("published model-trained for %s", locations.model_dir)
    return TrainingResult(
        job_spec,
        locations,
        True,
        chosen.fit,
        chosen.trained,
        report,
        check,
        tuning_metric,
        message_id,
        chosen.sharded,
    )


def _open(
    args: TrainerArgs,
    storage: TrainerStorage,
    specs: tuple[TrainingJobSpec, TransformSpec],
    locations: OutputLocations,
    work: Path,
    log: RunLogger,
) -> _Run:
    """The run's stage context: the user's module loaded first (it may declare
    hyperparameters), then the hyperparameters resolved."""
    job_spec, spec = specs
    user = None
    if job_spec.model_module is not None:
        user = load_user_module(storage, job_spec.model_module, work / "module")
        log.info("model module %s (sha256 %s)", user.where, job_spec.model_module.sha256)
    overrides = args.hyperparameter_overrides
    extra = frozenset(user.defaults) if user else frozenset()
    hparams = resolve_hyperparameters(job_spec, overrides, extra=extra)
    params = own_hyperparameters(job_spec, overrides, user.defaults) if user else {}
    return _Run(args, storage, job_spec, spec, hparams, locations, work, log, user, params)


@dataclass(frozen=True)
class _Candidate:
    """One trained model of the run, exported; ``metrics`` once evaluated (``auto``)."""

    family: Literal["network", "boosted_trees", "custom"]
    fit: FitResult
    trained: TrainerModel
    export_dir: Path
    metrics: ModelMetrics | None = None
    sharded: ShardedTraining | None = None


def _train(ctx: _Run, choice: StrategyChoice) -> list[_Candidate]:
    data_dir = ctx.work / "data"
    plan = FitPlan(
        train_files=download_shards(ctx.storage, ctx.spec.train_files, data_dir, "train"),
        eval_files=download_shards(ctx.storage, ctx.spec.eval_files, data_dir, "eval"),
        tensorboard_local_dir=ctx.work / "tensorboard",
        tensorboard_uri=ctx.locations.tensorboard_dir if ctx.args.is_chief else None,
        checkpoint_dir=ctx.args.checkpoint_dir,
    )
    family = ctx.job_spec.model
    families: list[Literal["network", "boosted_trees", "custom"]] = (
        ["network", "boosted_trees"] if family == "auto" else [family]
    )
    candidates = []
    for name in families:
        sharded = None
        if name == "boosted_trees":
            fitted, trained = _train_trees(ctx, plan, several=len(families) > 1)
        elif name == "network" and ctx.job_spec.sharding is not None:
            sharded = _train_sharded(ctx, choice, plan)
            fitted, trained = sharded.fit, sharded.trained
        elif name == "custom":
            fitted, trained = _train_custom(ctx, choice, plan)
        else:
            fitted, trained = _train_network(ctx, choice, plan, several=len(families) > 1)
        folder = "export" if len(families) == 1 else f"export-{name}"
        export_dir = export_serving_model(trained.model, ctx.spec, ctx.work / folder)
        candidates.append(_Candidate(name, fitted, trained, export_dir, sharded=sharded))
    return candidates


def _train_sharded(ctx: _Run, choice: StrategyChoice, plan: FitPlan) -> ShardedTraining:
    """The network with its embedding tables on the parameter servers (``choice`` is the
    coordinator's strategy; without a cluster, the default one)."""
    sharding = ctx.job_spec.sharding
    assert sharding is not None
    target = None
    if ctx.spec.label.problem_type == "regression":
        target = TargetScale(*target_moments(plan.train_files, ctx.spec.label))
    checkpoint_dir, input_dir = _sharded_directories(ctx, plan, choice)
    scalars = TensorBoardScalars(plan.tensorboard_local_dir)
    uploader = None
    if plan.tensorboard_uri:
        uploader = DirectoryUploader(ctx.storage, plan.tensorboard_local_dir, plan.tensorboard_uri)

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        scalars.on_epoch_end(epoch, logs)
        if uploader is not None:
            uploader.upload()

    sharded = train_sharded_network(
        choice,
        ctx.spec,
        ctx.hparams,
        sharding,
        train_files=plan.train_files,
        eval_files=plan.eval_files,
        log=ctx.log,
        target=target,
        on_epoch=on_epoch,
        input_dir=input_dir,
        checkpoint_dir=checkpoint_dir,
    )
    scalars.on_train_end()
    if is_gcs_uri(input_dir):
        tf.io.gfile.rmtree(input_dir)
    if uploader is not None:
        uploader.upload()
    ctx.log.info(
        "trained %d epochs, %d steps; embedding shards %s",
        sharded.fit.epochs_trained,
        sharded.fit.steps,
        shard_devices(sharded.network),
    )
    return sharded


def _sharded_directories(
    ctx: _Run, plan: FitPlan, choice: StrategyChoice
) -> tuple[str | None, str]:
    """Where parameter-server training checkpoints (``AIP_CHECKPOINT_DIR``) and writes the
    chunks its workers read: TensorFlow itself reads and writes both, so on Cloud Storage
    (a cluster's chunks in ``<run base>/ps-input``, deleted after training) only when it
    reaches it; with the storage emulator (whose tasks all run on this host) or in one
    process, the chunks go to the local work directory, and no checkpoint is kept on the
    emulator, as the Keras path's backups."""
    reachable = not ctx.args.storage_emulated
    checkpoint_dir = plan.checkpoint_dir
    if checkpoint_dir and is_gcs_uri(checkpoint_dir) and not reachable:
        ctx.log.info(
            "not checkpointing to %s: TensorFlow cannot reach the emulator", checkpoint_dir
        )
        checkpoint_dir = None
    output_dir = ctx.locations.output_dir
    if choice.kind == PARAMETER_SERVER and is_gcs_uri(output_dir) and reachable:
        return checkpoint_dir, join_uri(output_dir, "ps-input")
    return checkpoint_dir, str(ctx.work / "ps-input")


def _tensorboard_plan(plan: FitPlan, family: str, several: bool) -> FitPlan:
    """With several families, each writes its curves under ``<log dir>/<family>/``."""
    if not several:
        return plan
    return replace(
        plan,
        tensorboard_local_dir=plan.tensorboard_local_dir / family,
        tensorboard_uri=join_uri(plan.tensorboard_uri, family) if plan.tensorboard_uri else None,
    )


def _train_network(
    ctx: _Run, choice: StrategyChoice, plan: FitPlan, *, several: bool
) -> tuple[FitResult, TrainerModel]:
    plan = _tensorboard_plan(plan, "network", several)
    target = None
    if ctx.spec.label.problem_type == "regression":
        target = TargetScale(*target_moments(plan.train_files, ctx.spec.label))
    with choice.strategy.scope():
        built = build_model(ctx.spec, ctx.hparams, target)
    fitted = _fit(ctx, built.model, choice, plan)
    ctx.log.info("trained %d epochs, %d steps", fitted.epochs_trained, fitted.steps)
    return fitted, built


def _fit_environment(ctx: _Run) -> dict[str, Any]:
    """Where a fit's side outputs go, and whether TensorFlow reaches gs:// itself."""
    return {
        "storage": ctx.storage,
        "log": ctx.log,
        "is_chief": ctx.args.is_chief,
        "gcs_reachable_by_tensorflow": not ctx.args.storage_emulated,
    }


def _fit(ctx: _Run, model: Any, choice: StrategyChoice, plan: FitPlan) -> FitResult:
    return fit_model(model, plan, ctx.spec, ctx.hparams, choice, **_fit_environment(ctx))


def _train_custom(
    ctx: _Run, choice: StrategyChoice, plan: FitPlan
) -> tuple[FitResult, TrainerModel]:
    """The user's module builds (or trains) the model; Cascade does the rest."""
    user = ctx.user
    if user is None:
        raise InvalidConfigError("model custom needs a model_module")
    units = output_units(ctx.spec.label)
    context = make_context(ctx.spec, ctx.hparams, ctx.params, choice.strategy, units)
    if user.takes_over_training:
        return _run_user_training(ctx, choice, plan, user, context)
    with choice.strategy.scope():
        with user.calling("build_model(context)"):
            head = user.entry_point()(context)
        check_model(user, head, np.zeros((2, context.width), dtype=np.float32), units)
        raw = context.raw_inputs
        model = CascadeModel(inputs=raw, outputs=head(context.preprocessing(raw)), name="custom")
        compile_model(model, ctx.spec.label, ctx.hparams.learning_rate)
    with user.calling("training"):
        fitted = _fit(ctx, model, choice, plan)
    ctx.log.info("trained the module's model %d epochs", fitted.epochs_trained)
    trained = TrainerModel(
        model=model, preprocessing=context.preprocessing, trainable=head, label=ctx.spec.label
    )
    return fitted, trained


def _run_user_training(
    ctx: _Run, choice: StrategyChoice, plan: FitPlan, user: UserModule, context: ModelContext
) -> tuple[FitResult, TrainerModel]:
    train, evaluation, arguments = fit_arguments(
        plan, ctx.spec, ctx.hparams, choice, **_fit_environment(ctx)
    )
    context.train_dataset, context.eval_dataset = train, evaluation
    context.callbacks, context.fit_arguments = arguments["callbacks"], arguments
    with choice.strategy.scope(), user.calling("run(context)"):
        model = user.entry_point()(context)
    check_model(user, model, _missing_values_batch(ctx.spec), output_units(ctx.spec.label))
    fitted = fit_result(model, getattr(model, "history", None))
    ctx.log.info("the module trained its model %d epochs", fitted.epochs_trained)
    trained = TrainerModel(
        model=model, preprocessing=context.preprocessing, trainable=model, label=ctx.spec.label
    )
    return fitted, trained


def _missing_values_batch(spec: TransformSpec) -> dict[str, tf.Tensor]:
    """Two rows of raw inputs, all missing: what a model from raw inputs must accept."""
    return {
        feature.name: tf.constant([float("nan")] * 2)
        if feature_input_dtype(feature) == "float32"
        else tf.constant(["", ""])
        for feature in spec.features
    }


def _train_trees(ctx: _Run, plan: FitPlan, *, several: bool) -> tuple[FitResult, TrainerModel]:
    plan = _tensorboard_plan(plan, "boosted_trees", several)
    result = train_boosted_trees(
        ctx.spec,
        ctx.hparams,
        plan.train_files,
        log=ctx.log,
        tensorboard_dir=plan.tensorboard_local_dir,
    )
    if plan.tensorboard_uri:
        ctx.storage.upload_tree(plan.tensorboard_local_dir, plan.tensorboard_uri)
    return result.fit, result.trained


def _choose(
    ctx: _Run, candidates: list[_Candidate], table: pa.Table
) -> tuple[_Candidate, dict[str, dict[str, float]]]:
    """The only candidate; with ``auto``, the one with the lower eval loss (log loss or
    mean squared error: the proper scoring rule both families minimise), and every
    candidate's overall metrics for the run's record."""
    if len(candidates) == 1:
        return candidates[0], {}
    evaluated = [
        replace(
            candidate,
            metrics=evaluate_model(
                ServingModel.load(candidate.export_dir, ctx.locations.model_dir),
                table,
                ctx.spec,
                ctx.job_spec.slice_features,
            ),
        )
        for candidate in candidates
    ]
    comparison: dict[str, dict[str, float]] = {
        c.family: dict(c.metrics.overall.metrics) for c in evaluated if c.metrics
    }
    chosen = min(evaluated, key=lambda c: comparison[c.family]["loss"])
    ctx.log.info(
        "model auto: kept %s (eval loss %s)",
        chosen.family,
        {family: round(metrics["loss"], 6) for family, metrics in comparison.items()},
    )
    return chosen, comparison


def _write_history(ctx: _Run, fitted: FitResult) -> None:
    history = training_history(ctx.job_spec.run_id, fitted.history, trial_id=ctx.args.trial_id)
    ctx.storage.write_bytes(
        ctx.locations.history_uri,
        history.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )


def _evaluate(
    ctx: _Run, chosen: _Candidate, table: pa.Table, comparison: dict[str, dict[str, float]]
) -> EvaluationReport:
    spec, job_spec = ctx.spec, ctx.job_spec
    slices = job_spec.slice_features
    metrics = chosen.metrics or evaluate_model(
        ServingModel.load(chosen.export_dir, ctx.locations.model_dir), table, spec, slices
    )
    baseline, baseline_error = None, None
    if job_spec.baseline_model_uri:
        try:
            baseline = _evaluate_baseline(ctx, job_spec.baseline_model_uri, table)
        except (CascadeError, ValueError, OSError) as error:
            baseline_error = f"{type(error).__name__}: {error}"
            ctx.log.warning("baseline %s not evaluated: %s", job_spec.baseline_model_uri, error)
    report = EvaluationReport(
        dataset=spec.dataset,
        run_id=job_spec.run_id,
        problem_type=spec.label.problem_type,
        eval_examples=table.num_rows,
        slice_features=list(slices),
        candidate=metrics,
        baseline=baseline,
        baseline_error=baseline_error,
        newest_files=[f"{file.uri}#{file.generation}" for file in spec.newest_files],
        model_family=chosen.family,
        model_selection=comparison,
        model_module=ctx.user.where if ctx.user else None,
        hyperparameters={**family_hyperparameters(ctx.hparams, chosen.family), **ctx.params},
        epochs_trained=chosen.fit.epochs_trained,
        trial_id=ctx.args.trial_id,
        created_at=datetime.now(UTC),
    )
    ctx.storage.write_bytes(
        ctx.locations.metrics_uri,
        report.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )
    ctx.log.info(
        "eval metrics %s written to %s", report.candidate.overall.metrics, ctx.locations.metrics_uri
    )
    return report


def _evaluate_baseline(ctx: _Run, uri: str, table: pa.Table) -> ModelMetrics:
    local = ctx.storage.download_tree(uri, ctx.work / "baseline")
    try:
        baseline = ServingModel.load(local, uri)
        return evaluate_model(baseline, table, ctx.spec, ctx.job_spec.slice_features)
    except tf.errors.OpError as error:
        raise BadInputError(f"baseline model failed: {error.message}", uri=uri) from None


def _report_tuning_metric(
    ctx: _Run, report: EvaluationReport, fitted: FitResult
) -> tuple[str, float] | None:
    """Tuning runs (a trial id, a metric file or a tuning spec) report their metric."""
    args, tuning = ctx.args, ctx.job_spec.tuning
    if not (args.trial_id or args.hp_metric_file or tuning):
        return None
    tag = args.hp_metric_tag or (tuning.metric if tuning else DEFAULT_TUNING_METRIC)
    value = report.metric(tag)
    report_tuning_metric(
        tag,
        value,
        global_step=fitted.steps,
        metric_file=args.hp_metric_file,
        trial_id=args.trial_id,
    )
    ctx.log.info("reported tuning metric %s=%s", tag, value)
    return tag, value


def _start_experiment_run(ctx: _Run, experiments: VertexExperiments) -> None:
    """The run's (or trial's) experiment run, with the hyperparameters it trains with."""
    family = ctx.job_spec.model
    params: dict[str, HyperparameterValue] = {
        "model": family,
        "epochs": ctx.job_spec.epochs,
        **family_hyperparameters(ctx.hparams, family),
        **ctx.params,
    }
    experiments.start(
        dataset=ctx.spec.dataset,
        run_id=ctx.job_spec.run_id,
        trial_id=ctx.args.trial_id,
        params=params,
    )


def _log_experiment_results(
    experiments: VertexExperiments, fitted: FitResult, report: EvaluationReport
) -> None:
    """The kept model's per-epoch curves and its overall eval metrics."""
    experiments.log_history(fitted.history)
    experiments.log_metrics(
        {**report.candidate.overall.metrics, "epochs_trained": float(fitted.epochs_trained)}
    )


def _probe(ctx: _Run, probe: ProbeRunner, export_dir: Path) -> InfraCheck:
    check = probe(export_dir, ctx.work / "infra_check.json")
    check = check.model_copy(update={"model_dir": ctx.locations.model_dir})
    uri = ctx.locations.infra_check_uri
    ctx.storage.write_bytes(
        uri, check.model_dump_json(indent=2).encode(), content_type="application/json"
    )
    if not check.passed:
        raise BadInputError(
            "the exported model failed its load-and-probe check: " + "; ".join(check.reasons),
            uri=uri,
        )
    ctx.log.info("infra check passed (%s)", check.latency)
    return check


def _check_postcondition(storage: TrainerStorage, locations: OutputLocations) -> None:
    if MODEL_FILE not in storage.list_tree(locations.model_dir):
        raise PermanentError(f"postcondition failed: no {MODEL_FILE} in {locations.model_dir}")


def record_failure(
    storage: TrainerStorage | None,
    args: TrainerArgs | None,
    kind: Literal["permanent", "transient", "unexpected"],
    error: str,
) -> str | None:
    """Write ``failure.json`` beside the run's outputs (best effort: a trainer that cannot
    reach its storage still exits non-zero); returns its URI."""
    if storage is None or args is None:
        return None
    try:
        job_spec, _ = read_specs(storage, args.job_spec_uri)
        uri = join_uri(output_locations(args, job_spec).output_dir, TRAINING_FAILURE_FILE)
        failure = TrainingFailure(job=args.job_name, kind=kind, error=error, trial_id=args.trial_id)
        storage.write_bytes(
            uri, failure.model_dump_json().encode(), content_type="application/json"
        )
    except Exception:
        logging.getLogger("cascade.trainer").warning("could not record the failure", exc_info=True)
        return None
    return uri


def _end_failed(experiments: VertexExperiments | None) -> None:
    """A failed run's experiment run ends FAILED (nothing when none was started)."""
    if experiments is not None:
        experiments.end(failed=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point, and the only place that reads the environment."""
    from cascade.core.clients import make_publisher, make_storage_client
    from cascade.core.observability import configure_logging
    from cascade.core.settings import load_settings

    log = logging.getLogger("cascade.trainer")
    args: TrainerArgs | None = None
    storage: TrainerStorage | None = None
    experiments: VertexExperiments | None = None
    try:
        settings = load_settings()
        configure_logging(function_name="trainer", project=settings.project)
        args = TrainerArgs.from_command_line(sys.argv[1:] if argv is None else argv, os.environ)
        if args.cluster is not None and args.cluster.serves_only:
            log.info("serving as %s:%d", args.cluster.task_type, args.cluster.task_index)
            serve_cluster_task(args.cluster)  # returns only if the server stops
            return 0
        storage = TrainerStorage.from_client_factory(lambda: make_storage_client(settings))
        bus = None
        if args.is_chief and not args.is_tuning_trial:
            bus = MessageBus(make_publisher(settings), settings)
        experiments = VertexExperiments.from_settings(settings)
        result = run(args, storage=storage, bus=bus, experiments=experiments)
    except CascadeError as error:
        kind: Literal["permanent", "transient"] = (
            "permanent" if isinstance(error, PermanentError) else "transient"
        )
        log.error("training failed (%s): %s", kind, error)
        sys.stderr.write(f"trainer: training failed ({kind}): {error}\n")
        record_failure(storage, args, kind, str(error))
        _end_failed(experiments)
        return 1
    except Exception as error:
        log.exception("training failed unexpectedly")
        reason = f"{type(error).__name__}: {error}"
        sys.stderr.write(f"trainer: training failed: {reason}\n")
        record_failure(storage, args, "unexpected", reason)
        _end_failed(experiments)
        return 1
    log.info("training finished: model at %s", result.locations.model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
