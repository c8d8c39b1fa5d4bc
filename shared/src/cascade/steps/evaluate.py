"""evaluate: a candidate was trained (``model-trained``).

The candidate is judged against the dataset's evaluation thresholds
(``cascade.evaluation``): ``evaluation.json`` records every check, and ``model-blessed``
or an alert is published. A training job's end (``job-events``, the same function
source) is the ``training_job`` step: ``cascade.steps.training_job``.
"""

from __future__ import annotations

import logging

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.messages import ModelTrained
from cascade.core.observability import RunLogger
from cascade.core.pipeline_config import load_pipeline_config
from cascade.evaluation.judge import evaluate_candidate, next_messages
from cascade.evaluation.record import evaluation_path
from cascade.serving.uris import UriReader
from cascade.steps.runner import StepOutcome, execute_step

__all__ = ["handle_model_trained"]

STEP = "evaluate"
_log = logging.getLogger("cascade.steps.evaluate")


def handle_model_trained(
    ctx: StepContext, message: ModelTrained, *, event_id: str
) -> StepOutcome | None:
    """Judge the candidate against the dataset's thresholds; bless it or say why not.

    Writes ``runs/<run_id>/evaluation.json``; publishes ``model-blessed`` (blessed, with
    any warnings) and an alert for warnings, a rejection or a wait for approval.
    """
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"model-trained for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        current = ctx.ledger.get(message.run_id)
        if current is not None and current.state == "failed":
            return StepOutcome(
                state="rejected",
                summary=f"not evaluated: the run already failed ({current.error})",
                outputs={"verdict": "not_evaluated"},
            )
        config = load_pipeline_config(ctx.artifacts, message.dataset).evaluation
        reader = UriReader(ctx.store)
        record = evaluate_candidate(
            message, config, artifacts=ctx.artifacts, reader=reader, now=ctx.clock()
        )
        ctx.artifacts.write_json(evaluation_path(message.run_id), record)
        log.info("evaluation: %s", record.summary)
        rejected = not record.blessed
        return StepOutcome(
            state="rejected" if rejected else "succeeded",
            summary=record.summary,
            outputs={
                "verdict": record.verdict,
                "evaluation": ctx.artifacts.uri(evaluation_path(message.run_id)),
                "checks_failed": len(record.failed_checks()),
                "warnings": record.warnings(),
            },
            messages=next_messages(record, ctx.clock()),
            run_state="rejected" if record.verdict == "not_blessed" else None,
        )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)
