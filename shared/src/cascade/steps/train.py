"""train: a train request arrived (from transform, Pub/Sub or the HTTP entry point).

A request names a dataset and optionally hyperparameters, tuning on/off and a request
id (the idempotency key; without one, the Pub/Sub message id). A request from
transform continues the upload's run and trains on that run's transform; any other
request (a user's retrain, the scheduler, a coalesced follow-up) starts a run of its
own and trains on the dataset's latest transform, i.e. on all data accepted so far.

At most one training job per dataset runs at a time (``cascade.jobs.lock``): a
request arriving while one runs is coalesced into exactly one follow-up run, started
when the running job ends. The job spec goes to ``runs/<run_id>/training/job_spec.json``
and is submitted through the job runner (Vertex AI, or the local job service); the
claim records the job name, so a redelivered or resumed request finds its job, and a
retried step resubmits the spec it wrote first. With ``training.model: custom`` the
spec pins the dataset's model module (``datasets/<dataset>/<training.model_module>``)
to the generation read and the SHA-256 of its bytes; the step's outputs and the run's
lineage record the model family and the pinned module (a missing module fails the run).

Run ids come only from the system. A request's run is ``run_id_for_request(dataset,
request_id)``; a message may name another run only as transform does (the upload's
run, request id ``run:<run_id>``): a well-formed run id of the message's dataset,
naming an existing upload run whose transform succeeded and whose train step has not
finished. Anything else is a BadRequestError raised before the run is touched (the
adapter answers 400, or logs, alerts and acknowledges the message).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import (
    BadRequestError,
    ConcurrentUpdateError,
    PermanentError,
    StepInProgressError,
    UnknownJobError,
)
from cascade.core.job_spec import JobRunner, TrainingJobSpec
from cascade.core.messages import Alert, StepMessage, TrainRequest
from cascade.core.model_modules import pin_model_module, pinned_uri
from cascade.core.observability import RunLogger
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.runs import RunRecord, Trigger, check_system_run_id, run_id_for_request
from cascade.jobs.lock import (
    ActiveRun,
    Coalesced,
    Holding,
    RunRequest,
    TrainingLock,
    TrainingLockStore,
    follow_up_request,
    release,
    take_or_join,
)
from cascade.jobs.lost_request import TRAIN_STEP, lost_train_request
from cascade.jobs.records import (
    JobRecord,
    ModelTrainedBy,
    job_id_of,
    job_spec_name,
    training_folder,
    write_job_record,
)
from cascade.jobs.runners import job_runner_for
from cascade.jobs.spec_builder import build_job_spec, read_run_transform, resolve_transform_uri
from cascade.serving.state import deployed_model_uri
from cascade.steps.runner import StepOutcome, execute_step

__all__ = [
    "accepted_run_id",
    "acquire_lock",
    "failure_messages",
    "handle_train_request",
    "model_lineage",
    "start_training",
]

STEP = TRAIN_STEP


def handle_train_request(
    ctx: StepContext,
    request: TrainRequest,
    *,
    event_id: str,
    runner: JobRunner | None = None,
) -> StepOutcome | None:
    """``runner`` defaults to this process's (local job service or Vertex AI)."""
    request_id = request.request_id or f"message:{event_id}"
    run_id = accepted_run_id(ctx, request, request_id)
    if run_id is None:
        return None
    request = request.model_copy(update={"request_id": request_id, "run_id": run_id})
    now = ctx.clock()
    run = ctx.ledger.get(run_id) or RunRecord(
        run_id=run_id,
        dataset=request.dataset,
        trigger=Trigger(
            kind="request", request_id=request_id, event_id=event_id, reason=request.reason
        ),
        created_at=now,
        updated_at=now,
    )

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        jobs = runner if runner is not None else job_runner_for(ctx.settings)
        return start_training(ctx, jobs, request, run, claim, log)

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)


def accepted_run_id(ctx: StepContext, request: TrainRequest, request_id: str) -> str | None:
    """The run ``request`` trains, or None for a redelivered transform request whose run
    is already past training. BadRequestError when the message names a run it may not;
    StepInProgressError while the named run's validate or transform is still finishing
    (each publishes before it records its step as done, and that record may wait out
    Cloud Storage's same-object write limit)."""
    derived = run_id_for_request(request.dataset, request_id)
    if request.run_id is None or request.run_id == derived:
        return derived
    run_id = check_system_run_id(request.run_id, request.dataset)
    if request_id != f"run:{run_id}":
        raise BadRequestError(
            f"run_id {run_id}: a train request names a run only as transform does "
            f"(request_id run:{run_id}); omit run_id to start a run of its own"
        )
    run = ctx.ledger.get(run_id)
    if run is None:
        raise BadRequestError(f"run_id {run_id} names no run")
    validate = run.validation
    still_recording = validate is not None and validate.state == "running"
    if run.dataset == request.dataset and still_recording and run.state == "running":
        # validate publishes before it records its end
        raise StepInProgressError(f"run {run_id}: its validate step has not finished yet")
    if run.dataset != request.dataset or validate is None or validate.state != "succeeded":
        # An upload's run, or a quarantined file's release run: a file accepted into it.
        raise BadRequestError(
            f"run {run_id} is not the run of a file accepted into {request.dataset}"
        )
    transform = run.steps.get("transform")
    if transform is not None and transform.state == "running" and run.state == "running":
        raise StepInProgressError(f"run {run_id}: its transform step has not finished yet")
    if transform is None or transform.state != "succeeded":
        state = "never ran" if transform is None else transform.state
        raise BadRequestError(
            f"run {run_id} is not waiting for training: its transform step {state}"
        )
    train = run.steps.get("train")
    if train is not None and train.state != "running":
        return None  # transform's request, redelivered: the run is past training
    if run.state != "running":
        raise BadRequestError(f"run {run_id} is not waiting for training: it {run.state}")
    return run_id


def start_training(
    ctx: StepContext,
    runner: JobRunner,
    request: TrainRequest,
    run: RunRecord,
    claim: ClaimHandle,
    log: RunLogger,
) -> StepOutcome:
    """Submit the run's job, or coalesce the request into the dataset's follow-up."""
    submitted = claim.claim.submitted.get("job_name")
    if submitted:
        log.info("resumed after submitting %s", submitted)
        return _submitted_outcome(run, str(submitted), claim.claim.submitted)
    locks = TrainingLockStore(ctx.artifacts, run.dataset)
    decision = acquire_lock(ctx, runner, locks, run_id=run.run_id, request=request, log=log)
    if isinstance(decision, Coalesced):
        return _coalesced_outcome(run, decision)
    try:
        spec = _pinned_job_spec(ctx, run, decision.active, log)
        job_name = runner.submit(spec, request_id=run.run_id)
    except PermanentError as error:
        log.error("cannot start training: %s", error)
        handed_over = locks.update(lambda lock: release(lock, run.run_id, ctx.clock()))
        return _failed_before_submission(ctx, run, error, handed_over)
    details = _record_submission(ctx, runner, claim, spec, job_name)
    locks.update(lambda lock: _mark_submitted(lock, run.run_id, job_name, ctx))
    log.info("submitted %s for run %s", job_name, run.run_id)
    return _submitted_outcome(run, job_name, details)


def acquire_lock(
    ctx: StepContext,
    runner: JobRunner,
    locks: TrainingLockStore,
    *,
    run_id: str,
    request: TrainRequest,
    log: RunLogger,
) -> Holding | Coalesced:
    """Take the dataset's lock for ``run_id``, or coalesce into the pending follow-up.

    Whether the current holder is stale is decided outside the update (it asks the job
    runner and the ledger); the update releases it only if it is still the one checked.
    """
    current, _ = locks.read()
    stale = _stale_reason(ctx, runner, current.active, run_id)
    if stale is not None and current.active is not None:
        log.warning("training lock of %s is stale: %s", locks.dataset, stale)
    lost = None
    if stale is None and current.active is not None and current.active.run_id != run_id:
        lost = lost_train_request(ctx, current.active)
    if lost is not None:
        log.warning("training lock of %s: %s; publishing its request again", locks.dataset, lost)
    request_for = RunRequest(
        run_id=run_id,
        request_id=request.request_id or run_id,
        hyperparameters=dict(request.hyperparameters),
        tune=request.tune,
    )
    stale_holder = current.active if stale is not None else None
    lost_holder = current.active if lost is not None else None
    return locks.update(
        lambda lock: take_or_join(lock, request_for, ctx.clock(), stale_holder, lost_holder)
    )


def _stale_reason(
    ctx: StepContext, runner: JobRunner, active: ActiveRun | None, run_id: str
) -> str | None:
    """Why the active entry no longer holds the lock, or None while it rightly does."""
    if active is None or active.run_id == run_id:
        return None
    if active.job_name:
        try:
            status = runner.get(active.job_name)
        except UnknownJobError:
            return f"job {active.job_name} is unknown to the job runner"
        return f"job {active.job_name} is already {status.state}" if status.finished else None
    record = ctx.ledger.get(active.run_id)
    step = record.steps.get("train") if record is not None else None
    if step is not None and step.state != "running":
        return f"run {active.run_id} ended its train step ({step.state}) without a job"
    waited = ctx.clock() - active.reserved_at
    if step is None and waited > timedelta(seconds=ctx.settings.max_event_age_s):
        return f"run {active.run_id} never started its train step ({waited} ago)"
    return None


def _pinned_job_spec(
    ctx: StepContext, run: RunRecord, active: ActiveRun, log: RunLogger
) -> TrainingJobSpec:
    """The spec this run submits: the one an earlier attempt of the step wrote, else a
    new one, written create-only. A retried step (a transient error, a takeover after a
    crash between writing and recording the submission) resubmits exactly the spec it
    wrote first, with the same transform, baseline and model module generation, even
    if the dataset has moved on meanwhile: the job may already be running it."""
    name = job_spec_name(run.run_id)
    stored = ctx.artifacts.read(name)
    if stored is not None:
        try:
            written = TrainingJobSpec.model_validate_json(stored.data)
        except ValidationError as error:
            log.warning("replacing the unreadable job spec %s: %s", ctx.artifacts.uri(name), error)
        else:
            if written.run_id == run.run_id:
                log.info("resubmitting the job spec an earlier attempt wrote")
                return written
    spec = _job_spec(ctx, run, active)
    precondition = 0 if stored is None else stored.generation
    if ctx.artifacts.write_json(name, spec, if_generation_match=precondition) is None:
        raise ConcurrentUpdateError(f"{ctx.artifacts.uri(name)} was written by another attempt")
    return spec


def _job_spec(ctx: StepContext, run: RunRecord, active: ActiveRun) -> TrainingJobSpec:
    """A new spec; ``model: custom`` pins the dataset's module as it is now (BadInputError
    naming the object when it is missing or not a module)."""
    config = load_pipeline_config(ctx.artifacts, run.dataset)
    module = None
    if config.training.model == "custom" and config.training.model_module is not None:
        module = pin_model_module(ctx.artifacts, run.dataset, config.training.model_module)
    return build_job_spec(
        run_id=run.run_id,
        dataset=run.dataset,
        transform_spec_uri=resolve_transform_uri(
            ctx.artifacts, run_id=run.run_id, dataset=run.dataset
        ),
        output_dir=ctx.artifacts.uri(training_folder(run.run_id)),
        config=config,
        hyperparameters=dict(active.hyperparameters),
        tune=active.tune,
        baseline_model_uri=deployed_model_uri(ctx.artifacts, run.dataset),
        model_module=module,
        # `distribution: auto` weighs the embedding tables the transform sizes.
        transform=(
            read_run_transform(ctx.artifacts, run_id=run.run_id, dataset=run.dataset)
            if config.training.distribution == "auto"
            else None
        ),
    )


def _record_submission(
    ctx: StepContext, runner: JobRunner, claim: ClaimHandle, spec: TrainingJobSpec, job_name: str
) -> dict[str, Any]:
    kind = "tuning" if spec.tuning is not None else "custom"
    announcer: ModelTrainedBy = "trainer"
    if spec.tuning is not None:
        announcer = "runner" if runner.publishes_tuning_result else "job-events"
    details = {
        "job_name": job_name,
        "job_spec": spec.job_spec_uri,
        "transform": spec.transform_spec_uri,
        "kind": kind,
        **model_lineage(spec),
    }
    claim.record_submission(**details)
    write_job_record(
        ctx.artifacts,
        JobRecord(
            job_name=job_name,
            job_id=job_id_of(job_name),
            run_id=spec.run_id,
            dataset=spec.dataset,
            kind=kind,
            model_trained_by=announcer,
            job_spec_uri=spec.job_spec_uri,
            submitted_at=ctx.clock(),
        ),
    )
    return details


def _mark_submitted(lock: TrainingLock, run_id: str, job_name: str, ctx: StepContext) -> None:
    if lock.active is not None and lock.active.run_id == run_id:
        lock.active.job_name = job_name
        lock.active.submitted_at = ctx.clock()
        lock.updated_at = ctx.clock()


def model_lineage(spec: TrainingJobSpec) -> dict[str, str]:
    """What a run records of its model code: the family and, for ``custom``, the module
    pinned (``gs://…/module.py#<generation>``) and the SHA-256 of its bytes."""
    lineage: dict[str, str] = {"model": spec.model}
    if spec.model_module is not None:
        lineage["model_module"] = pinned_uri(spec.model_module)
        lineage["model_module_sha256"] = spec.model_module.sha256
    return lineage


_MODEL_LINEAGE_KEYS = ("model", "model_module", "model_module_sha256")


def _submitted_outcome(run: RunRecord, job_name: str, details: dict[str, Any]) -> StepOutcome:
    model = {key: details[key] for key in _MODEL_LINEAGE_KEYS if key in details}
    return StepOutcome(
        summary=f"submitted {details.get('kind', 'training')} job {job_name}",
        outputs=dict(details),
        lineage={"training_job": job_name, "transform": details.get("transform"), **model},
    )


def _coalesced_outcome(run: RunRecord, decision: Coalesced) -> StepOutcome:
    messages: list[StepMessage] = []
    if decision.handed_over is not None:
        messages.append(follow_up_request(run.dataset, decision.handed_over))
    return StepOutcome(
        summary=(
            f"another training job of {run.dataset} is running: coalesced into "
            f"follow-up run {decision.follow_up_run_id}"
        ),
        outputs={"coalesced_into": decision.follow_up_run_id},
        messages=messages,
        run_state="succeeded",
        lineage={"trained_by": decision.follow_up_run_id},
    )


def failure_messages(
    ctx: StepContext,
    dataset: str,
    run_id: str,
    step: str,
    summary: str,
    handed_over: ActiveRun | None,
) -> list[StepMessage]:
    messages: list[StepMessage] = [
        Alert(
            dataset=dataset,
            run_id=run_id,
            step=step,
            severity="ERROR",
            summary=summary,
            at=ctx.clock(),
        )
    ]
    if handed_over is not None:
        messages.append(follow_up_request(dataset, handed_over))
    return messages


def _failed_before_submission(
    ctx: StepContext, run: RunRecord, error: PermanentError, handed_over: ActiveRun | None
) -> StepOutcome:
    summary = f"train failed: {error}"
    return StepOutcome(
        state="failed",
        summary=str(error),
        run_state="failed",
        messages=failure_messages(ctx, run.dataset, run.run_id, "train", summary, handed_over),
    )
