"""deploy: a blessed model goes to the endpoint, through a canary.

The candidate must be blessed in its ``evaluation.json`` (or force-blessed): a model
that failed a blocking threshold or its load-and-probe check is never deployed, even if
a ``model-blessed`` message for it arrives. The rollout (``cascade.deploy.rollout``)
registers the version, gives it the canary share, checks it, and promotes it or rolls
it back; the deployer is Vertex AI in the cloud and the local model server locally.
"""

from __future__ import annotations

from typing import Any

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.messages import Alert, BatchPredictRequest, ModelBlessed, StepMessage
from cascade.core.observability import RunLogger
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.serving_config import ServingConfig
from cascade.deploy.deployer import Candidate, Deployer, lineage_of
from cascade.deploy.deployers import deployer_for
from cascade.deploy.rollout import roll_out
from cascade.deploy.smoke import read_transform_spec, smoke_instances
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.state import record_serving_mode
from cascade.steps.runner import StepOutcome, execute_step

__all__ = ["handle_model_blessed"]

STEP = "deploy"


class _ClaimProgress:
    """The rollout's progress, kept in the claim's ``submitted`` record."""

    def __init__(self, claim: ClaimHandle) -> None:
        self._claim = claim

    @property
    def done(self) -> dict[str, Any]:
        return dict(self._claim.claim.submitted)

    def record(self, **stages: Any) -> None:
        self._claim.record_submission(**stages)


def _blessed_evaluation(ctx: StepContext, message: ModelBlessed) -> EvaluationRecord:
    found = ctx.artifacts.read_model(evaluation_path(message.run_id), EvaluationRecord)
    if found is None:
        raise BadRequestError(f"run {message.run_id} has no evaluation.json; not deploying")
    record = found[0]
    if not record.blessed or not record.infra_passed:
        raise BadRequestError(
            f"run {message.run_id} is {record.verdict} in its evaluation; not deploying"
        )
    return record


_MODEL_LINEAGE = ("model", "model_module", "model_module_sha256")


def _model_lineage(lineage: dict[str, Any]) -> dict[str, str]:
    """What the train step recorded about the model's code: the family and, for
    ``model: custom``, the pinned module and its hash."""
    return {key: str(lineage[key]) for key in _MODEL_LINEAGE if lineage.get(key)}


def handle_model_blessed(
    ctx: StepContext, message: ModelBlessed, *, event_id: str, deployer: Deployer | None = None
) -> StepOutcome | None:
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"model-blessed for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        evaluation = _blessed_evaluation(ctx, message)
        pipeline = load_pipeline_config(ctx.artifacts, message.dataset)
        config = pipeline.deployment
        spec = read_transform_spec(ctx.artifacts, message.run_id)
        candidate = Candidate(
            dataset=message.dataset,
            run_id=message.run_id,
            model_uri=evaluation.model_uri,
            lineage={**lineage_of(message.run_id, spec), **_model_lineage(run.lineage)},
            serving_mode=pipeline.serving.mode,
        )
        target = deployer or deployer_for(ctx)
        instances = [] if spec is None else smoke_instances(spec)
        record_serving_mode(ctx.artifacts, message.dataset, pipeline.serving.mode)
        result = roll_out(target, candidate, config, instances, _ClaimProgress(claim))
        record_serving_mode(ctx.artifacts, message.dataset, pipeline.serving.mode)  # 1st deploy
        outputs = {"target": target.target, **result.outputs(), "warnings": message.warnings}
        if result.promoted:
            summary = f"version {result.version} serves 100% (canary {result.canary.detail})"
            return StepOutcome(
                summary=summary,
                outputs=outputs,
                messages=_batch_requests(pipeline.serving, message.dataset, result.version),
                run_state="succeeded",
                lineage={"deployed_version": result.version},
            )
        summary = f"version {result.version} rolled back: canary failed: {result.canary.detail}"
        alert = Alert(
            dataset=message.dataset,
            run_id=message.run_id,
            step=STEP,
            severity="ERROR",
            summary=summary,
            details=outputs,
            at=ctx.clock(),
        )
        return StepOutcome(
            state="failed", summary=summary, outputs=outputs, messages=[alert], run_state="failed"
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)


def _batch_requests(serving: ServingConfig, dataset: str, version: str) -> list[StepMessage]:
    """A promoted version of a static or hybrid dataset has no precomputed answers yet:
    ask batch-predict to score the dataset's batch source with it (nothing without one;
    until its batch ends, a static dataset answers 404 and a hybrid one asks the model)."""
    if serving.mode == "dynamic" or serving.batch_source is None:
        return []
    return [BatchPredictRequest(dataset=dataset, request_id=f"deploy:{version}", version=version)]
