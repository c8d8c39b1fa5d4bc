"""transform: data was accepted; fit the transform, write the split, ask for training.

On ``data-validated`` for a run:

1. the data snapshot: every accepted file of the dataset at its validated generation,
   stored once per run (``runs/<run_id>/transform/snapshot.json``);
2. the transform, fitted from the dataset's merged baseline statistics and its
   pipeline config (label, problem type, ``transform`` section);
3. the deterministic train/eval split as Parquet shards under
   ``runs/<run_id>/transform/{train,eval}/``, streamed file by file;
4. ``transform.json`` (the TransformSpec), the dataset's latest-transform pointer, and
   a ``TrainRequest`` for the run, as ``training.retrain_on`` decides (docs/validation.md,
   "Policy"): ``every_file`` (the default) asks for training on every accepted file;
   ``value_skew`` only for a file whose validation found value skews, or while no model
   serves the dataset (its first file): otherwise the run ends here, its transform
   fitted, and the model serving keeps serving. A request caused by value skews says so
   in its reason (``value skew in credit/2026-02.csv: drift in 'amount' (...)``), and
   the step's outputs record the reason or why no request was made.

A snapshot that ``transform.beam`` routes to Beam (``always``, or more rows than
``above_rows``) has step 3 written by an Apache Beam job instead
(``cascade.steps.transform_beam``: Dataflow in the cloud, the local job service's
DirectRunner on a laptop): the step launches it and ends without publishing; the job's
end runs step 4 as the step ``transform_split`` (``finish_transform_job``), with the
same code as here (``split_outcome``), from the job's shards under
``dataflow/outputs/<run_id>/transform/``.

The split marks the rows of the snapshot's **newest files** (``cascade.transform.newest``:
the files the production model was not trained on, else the last accepted file), so the
trainer reports both models on them (the ``newest_files`` slice); every file contributes
eval rows.

A redelivery of finished work is a no-op (the claim); a resumed step reuses the stored
snapshot and, once ``transform.json`` exists, only republishes the request. A missing
label or problem type is an InvalidConfigError, recorded on the run and alerted.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from cascade.beam.materialize_request import MaterializeRequest
from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadInputError, BadRequestError
from cascade.core.job_spec import JobStatus, TrainingJobSpec
from cascade.core.messages import MAX_REASON_CHARS, DataValidated, StepMessage, TrainRequest
from cascade.core.observability import RunLogger
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import PipelineConfig, load_pipeline_config
from cascade.core.runs import RunRecord
from cascade.jobs.beam_records import BeamJobRecord, BeamRunner
from cascade.jobs.beam_runners import beam_runner_for
from cascade.jobs.records import job_spec_name
from cascade.serving.state import deployed_model_uri, read_serving_state
from cascade.steps.beam_job_end import ended_job
from cascade.steps.runner import StepOutcome, execute_step
from cascade.steps.transform_beam import (
    SPLIT_STEP,
    SplitJobError,
    launch_split_job,
    split_job_outputs,
    split_request,
    waiting_outcome,
)
from cascade.transform.catalog import (
    TransformPointer,
    advance_latest_transform,
    read_transform,
    snapshot_name,
    transform_folder,
    transform_spec_name,
)
from cascade.transform.coalesce import (
    HandOverWatch,
    covering_run,
    hand_over_open,
    record_decision,
)
from cascade.transform.materialize import SplitShards, SplitStopped, write_split_shards
from cascade.transform.newest import newest_files
from cascade.transform.snapshot import (
    DataSnapshot,
    GcsObjectOpener,
    ObjectOpener,
    load_or_create_snapshot,
)
from cascade.transform.spec import SnapshotFile, TransformSpec
from cascade.transform.spec_fitting import FittedTransform, dataset_schema, fit_transform
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.manifest import AcceptedFile, ValueSkew
from cascade.validation.summaries import DatasetSummary

__all__ = [
    "SPLIT_STEP",
    "finish_transform_job",
    "handle_data_validated",
    "split_outcome",
    "train_decision",
    "transform_run",
]

STEP = "transform"
_log = logging.getLogger("cascade.steps.transform")
_REASON_SKEWS = 5
"""Value skews named in a train request's reason (the rest are counted)."""


def handle_data_validated(
    ctx: StepContext,
    message: DataValidated,
    *,
    event_id: str,
    opener: ObjectOpener | None = None,
    beam_runner: BeamRunner | None = None,
) -> StepOutcome | None:
    """``opener`` reads landed files (default: the storage client, pinned generations);
    ``beam_runner`` launches the split of a run routed to Beam (default:
    ``jobs.beam_runners.beam_runner_for``)."""
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"data-validated for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        reader = opener if opener is not None else GcsObjectOpener(ctx.store)
        return transform_run(ctx, run, reader, log, claim=claim, beam_runner=beam_runner)

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)


def transform_run(
    ctx: StepContext,
    run: RunRecord,
    opener: ObjectOpener,
    log: RunLogger,
    *,
    claim: ClaimHandle | None = None,
    beam_runner: BeamRunner | None = None,
) -> StepOutcome:
    """The body of the step (also what a resumed delivery runs).

    With the step's ``claim``, a snapshot that ``transform.beam`` routes to Beam has its
    split written by a Beam job (``cascade.steps.transform_beam``): the step records the
    job and ends without publishing; ``finish_transform_job`` runs the rest of this
    function (``split_outcome``) from the job's shards when it ends.
    """
    existing = read_transform(ctx.artifacts, run.run_id)
    config = load_pipeline_config(ctx.artifacts, run.dataset)
    if existing is not None:
        log.info("resumed after transform.json was written: republishing the train request")
        return _outcome(ctx, run, existing, skipped={}, config=config)
    if claim is not None and claim.claim.submitted.get("beam_job"):
        log.info("resumed after launching Beam job %s", claim.claim.submitted["beam_job"])
        return waiting_outcome(claim.claim.submitted)
    snapshot = load_or_create_snapshot(
        ctx.artifacts,
        snapshot_name(run.run_id),
        opener,
        dataset=run.dataset,
        run_id=run.run_id,
        now=ctx.clock(),
    )
    if not snapshot.files:
        raise BadInputError(f"dataset {run.dataset} has no readable accepted files to train on")
    record_decision(ctx.artifacts, snapshot)
    watch = None
    if _may_hand_over(ctx, run, config):
        covering = covering_run(ctx.artifacts, snapshot)
        if covering is not None:
            log.info("run %s's transform covers this snapshot: not materialised", covering)
            return _handed_over(snapshot, covering)
        watch = HandOverWatch(ctx.artifacts, snapshot)
    fitted = _fit(ctx, run.dataset, config)
    newest = newest_files(snapshot.files, _production_snapshot(ctx, run.dataset))
    request = split_request(run, snapshot.files, fitted, newest, config.validation)
    if claim is not None and config.transform.beam.routes(snapshot.rows):
        runner = beam_runner if beam_runner is not None else beam_runner_for(ctx.settings)
        return launch_split_job(ctx, runner, claim, run, request, fitted.skipped, log)
    try:
        shards = write_split_shards(
            ctx.artifacts,
            request.files,
            opener,
            schema=request.row_schema(),
            split=request.split,
            folder=transform_folder(run.run_id),
            config=request.validation,
            newest=request.newest,
            newest_column=request.newest_column,
            stop=watch,
        )
    except SplitStopped as stopped:
        covering = watch.covering if watch is not None else None
        if covering is None:  # only the watch stops a split
            raise
        log.info("run %s's transform covers this snapshot: split abandoned", covering)
        for name in stopped.names:
            ctx.artifacts.delete(name)
        return _handed_over(snapshot, covering)
    shards = replace(
        shards,
        train_names=[ctx.artifacts.uri(name) for name in shards.train_names],
        eval_names=[ctx.artifacts.uri(name) for name in shards.eval_names],
    )
    return split_outcome(ctx, run, request, shards, skipped=fitted.skipped, config=config, log=log)


def _may_hand_over(ctx: StepContext, run: RunRecord, config: PipelineConfig) -> bool:
    """Whether a later transform may train on this run's file in its place: only while
    the dataset's latest transform is younger than ``transform.handover_within_s``, and
    not when the file's value skews are what asks for training (``retrain_on:
    value_skew``), as the later run's request would not name them, or not be made."""
    within_s = config.transform.handover_within_s
    if not hand_over_open(ctx.artifacts, run.dataset, ctx.clock(), within_s):
        return False
    if config.training.retrain_on != "value_skew":
        return True
    manifest = _run_manifest(ctx, run)
    return manifest is None or not manifest.value_skews


def _handed_over(snapshot: DataSnapshot, covering: str) -> StepOutcome:
    """This run's file is in run ``covering``'s snapshot, decided after this one's
    (``cascade.transform.coalesce``): that run transforms and asks for training."""
    return StepOutcome(
        summary=(
            f"the transform of run {covering} covers this run's {len(snapshot.files)} "
            "accepted file(s) and more: not transformed twice; that run asks for training"
        ),
        outputs={"transform_coalesced_into": covering, "snapshot_files": len(snapshot.files)},
        run_state="succeeded",
        lineage={"transform_coalesced_into": covering},
    )


def split_outcome(
    ctx: StepContext,
    run: RunRecord,
    request: MaterializeRequest,
    shards: SplitShards,
    *,
    skipped: dict[str, str],
    config: PipelineConfig,
    log: RunLogger,
) -> StepOutcome:
    """The rest of transform once the split is written, in the function or by a Beam
    job: the zero-rows check, ``transform.json``, the latest pointer, the train request.
    ``shards`` names the shards by gs:// URI (as ``MaterializeResult.split_shards``)."""
    if not shards.train_rows or not shards.eval_rows:
        rows = sum(file.rows for file in request.files)
        raise BadInputError(
            f"the split of {rows} rows left {shards.train_rows} train and "
            f"{shards.eval_rows} eval rows: upload more data or change transform.eval_fraction"
        )
    spec = TransformSpec(
        dataset=run.dataset,
        run_id=run.run_id,
        label=request.label,
        features=request.features,
        passthrough_key=request.passthrough_key,
        split=request.split,
        snapshot=request.files,
        train_files=list(shards.train_names),
        eval_files=list(shards.eval_names),
        train_rows=shards.train_rows,
        eval_rows=shards.eval_rows,
        created_at=ctx.clock(),
        newest_files=request.newest,
        newest_column=request.newest_column,
        newest_eval_rows=shards.newest_eval_rows,
    )
    ctx.artifacts.write_json(transform_spec_name(run.run_id), spec)
    log.info(
        "transform %s: %d features, %d train / %d eval rows from %d files",
        spec.fingerprint(),
        len(spec.features),
        spec.train_rows,
        spec.eval_rows,
        len(spec.snapshot),
    )
    outcome = _outcome(ctx, run, spec, skipped=skipped, config=config)
    # Stream rows a message id had brought in already (at-least-once delivery).
    outcome.outputs["duplicates_removed"] = shards.duplicate_rows
    if shards.duplicate_rows:
        outcome.summary += f"; {shards.duplicate_rows} duplicate stream message(s) removed"
    return outcome


def finish_transform_job(
    ctx: StepContext,
    job_id: str,
    *,
    owner: str,
    runner: BeamRunner | None = None,
    announces_end: bool = False,
    message: str = "",
) -> StepOutcome | None:
    """A Beam split job ended (or logged something): finish its run's transform.

    Called for a Dataflow job message (``cascade.steps.beam_completion``) and by
    reconcile for a run whose job's end was never heard of. The job index says which
    run; the runner says the job's state. A job still running is left alone
    (TransientError when its message announces its end, so the message is redelivered
    until the state is visible); a job Cascade did not launch, or not a split job, is
    ignored. The ``transform_split`` step's claim makes a duplicate end a no-op.
    ``message``: the job message's text, added to a failed job's reason.
    """
    ended = ended_job(
        ctx,
        job_id,
        kind="transform_split",
        runner=runner,
        announces_end=announces_end,
        message=message,
    )
    if ended is None:
        return None
    run = ended.run

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return _finish_split(ctx, run, ended.record, ended.status, log)

    return execute_step(ctx, run=run, step=SPLIT_STEP, owner=owner, body=body)


def _finish_split(
    ctx: StepContext, run: RunRecord, record: BeamJobRecord, status: JobStatus, log: RunLogger
) -> StepOutcome:
    """transform's end from the job's shards: ``split_outcome``, as the function path."""
    config = load_pipeline_config(ctx.artifacts, run.dataset)
    existing = read_transform(ctx.artifacts, run.run_id)
    if existing is not None:
        log.info("resumed after transform.json was written: republishing the train request")
        return _outcome(ctx, run, existing, skipped={}, config=config)
    if status.state != "succeeded":
        reason = status.error or "no reason given"
        raise SplitJobError(
            f"the Beam split job {record.job_id} of run {run.run_id} {status.state}: {reason}"
        )
    request, result = split_job_outputs(ctx, record)
    launched = ctx.claims.get(run.run_id, STEP)
    skipped = launched.submitted.get("skipped_features", {}) if launched is not None else {}
    log.info("the split of run %s from Beam job %s", run.run_id, record.job_id)
    return split_outcome(
        ctx,
        run,
        request,
        result.split_shards(),
        skipped=dict(skipped) if isinstance(skipped, dict) else {},
        config=config,
        log=log,
    )


def _production_snapshot(ctx: StepContext, dataset: str) -> list[SnapshotFile] | None:
    """The files the production model was trained on: the snapshot of the transform its
    training job used; None when no model serves or that cannot be read."""
    found = read_serving_state(ctx.artifacts, dataset)
    primary = None if found is None else found[0].primary
    if primary is None:
        return None
    prefix = ctx.artifacts.uri("")
    try:
        job = ctx.artifacts.read_model(job_spec_name(primary.run_id), TrainingJobSpec)
        if job is None or not job[0].transform_spec_uri.startswith(prefix):
            return None
        spec = ctx.artifacts.read_model(
            job[0].transform_spec_uri.removeprefix(prefix), TransformSpec
        )
    except ValueError:
        return None
    return None if spec is None else list(spec[0].snapshot)


def _fit(ctx: StepContext, dataset: str, config: PipelineConfig) -> FittedTransform:
    schema = dataset_schema(ctx.artifacts, dataset)
    return fit_transform(
        _baseline_summary(ctx, dataset, schema, config),
        dataset=dataset,
        label=config.label,
        problem_type=config.problem_type,
        config=config.transform,
        schema=schema,
    )


def _baseline_summary(
    ctx: StepContext, dataset: str, schema: Any, config: PipelineConfig
) -> DatasetSummary:
    """The dataset's baseline as validation reads it (``BaselineStore.load``)."""
    baselines = BaselineStore(ctx.artifacts, dataset)
    stored = baselines.load(schema, config.validation)
    if stored is None:
        raise BadInputError(f"dataset {dataset} has no baseline statistics ({baselines.uri}) yet")
    return stored.summary


def _run_manifest(ctx: StepContext, run: RunRecord) -> AcceptedFile | None:
    """The accepted-file manifest this run's validate step wrote (None for a duplicate
    that added no data, or a run that validated nothing)."""
    found = ctx.artifacts.read_model(
        DatasetPaths(run.dataset).accepted_manifest(run.run_id), AcceptedFile
    )
    return None if found is None else found[0]


def _object_path(uri: str) -> str:
    """``credit/2026-02.csv`` of ``gs://landing/credit/2026-02.csv``."""
    return uri.removeprefix("gs://").partition("/")[2] or uri


def _skew_reason(manifest: AcceptedFile, skews: list[ValueSkew]) -> str:
    named = "; ".join(skew.brief() for skew in skews[:_REASON_SKEWS])
    more = len(skews) - _REASON_SKEWS
    if more > 0:
        named += f"; and {more} more"
    return f"value skew in {_object_path(manifest.uri)}: {named}"


def train_decision(
    ctx: StepContext, run: RunRecord, spec: TransformSpec, config: PipelineConfig
) -> tuple[str | None, str]:
    """Whether the run asks for training: ``(reason, "")`` or ``(None, why not)``."""
    manifest = _run_manifest(ctx, run)
    skews = manifest.value_skews if manifest is not None else []
    fitted = f"transform {spec.fingerprint()} of {len(spec.snapshot)} accepted file(s)"
    if manifest is not None and skews:
        reason = f"{_skew_reason(manifest, skews)}; {fitted}"
        return reason[:MAX_REASON_CHARS], ""
    if config.training.retrain_on == "every_file":
        return fitted, ""
    if deployed_model_uri(ctx.artifacts, run.dataset) is None:
        return f"no model serves {run.dataset} yet; {fitted}", ""
    source = _object_path(manifest.uri) if manifest is not None else "this run's file"
    return None, (
        f"no train request: training.retrain_on is value_skew and {source} brought no "
        "value skew; the model serving keeps serving (a train request retrains on "
        "this transform)"
    )


def _outcome(
    ctx: StepContext,
    run: RunRecord,
    spec: TransformSpec,
    *,
    skipped: dict[str, str],
    config: PipelineConfig,
) -> StepOutcome:
    transform_uri = ctx.artifacts.uri(transform_spec_name(run.run_id))
    pointer = TransformPointer(
        run_id=run.run_id,
        transform_uri=transform_uri,
        files=len(spec.snapshot),
        rows=spec.train_rows + spec.eval_rows,
        created_at=spec.created_at,
    )
    advance_latest_transform(ctx.artifacts, pointer, run.dataset)
    outputs: dict[str, Any] = {
        "transform": transform_uri,
        "fingerprint": spec.fingerprint(),
        "snapshot": ctx.artifacts.uri(snapshot_name(run.run_id)),
        "files": len(spec.snapshot),
        "train_rows": spec.train_rows,
        "eval_rows": spec.eval_rows,
        "features": len(spec.features),
        "skipped_features": skipped,
        "newest_files": [f"{file.uri}#{file.generation}" for file in spec.newest_files],
        "newest_eval_rows": spec.newest_eval_rows,
    }
    summary = (
        f"{len(spec.features)} features, {spec.train_rows} train / {spec.eval_rows} "
        f"eval rows from {len(spec.snapshot)} file(s)"
    )
    reason, not_training = train_decision(ctx, run, spec, config)
    messages: list[StepMessage] = []
    if reason is None:
        outputs["train_request"] = not_training
        summary += f"; {not_training}"
    else:
        outputs["train_reason"] = reason
        messages.append(
            TrainRequest(
                dataset=run.dataset,
                request_id=f"run:{run.run_id}",
                run_id=run.run_id,
                reason=reason,
            )
        )
    return StepOutcome(
        summary=summary,
        outputs=outputs,
        messages=messages,
        run_state="succeeded" if reason is None else None,
        lineage={
            "transform": transform_uri,
            "transform_fingerprint": spec.fingerprint(),
            "snapshot": [f"{file.uri}#{file.generation}" for file in spec.snapshot],
        },
    )
