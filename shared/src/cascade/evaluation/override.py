"""The audited manual override: force-bless a candidate the checks did not bless.

For the cases users asked TFX for: a first run awaiting approval, a known and accepted
regression, a metric that moved for a good reason. Recorded in evaluation.json (who, why,
when, how, what the checks had said) and on the run, announced with a WARNING alert,
then ``model-blessed`` is published. A model that failed its load-and-probe check
cannot be force-blessed: it cannot be served. Calling it again for the same run
republishes (the deploy step's claim absorbs the duplicate) and changes nothing else.
"""

from __future__ import annotations

from datetime import datetime

from cascade.core.bus import MessageBus
from cascade.core.errors import BadRequestError, ConcurrentUpdateError
from cascade.core.runs import RunLedger, RunRecord
from cascade.core.store import ArtifactStore
from cascade.evaluation.judge import next_messages, summarize
from cascade.evaluation.record import EvaluationRecord, Override, evaluation_path

__all__ = ["CannotBlessError", "force_bless"]

STEP = "evaluate"


class CannotBlessError(BadRequestError):
    """The run cannot be force-blessed (no evaluation, already blessed, model unservable)."""


def force_bless(
    *,
    artifacts: ArtifactStore,
    ledger: RunLedger,
    bus: MessageBus,
    run_id: str,
    actor: str,
    reason: str,
    via: str,
    now: datetime,
    authenticated_as: str | None = None,
) -> EvaluationRecord:
    """Bless ``run_id``'s candidate on a person's word; returns the updated record."""
    found = artifacts.read_model(evaluation_path(run_id), EvaluationRecord)
    if found is None:
        raise CannotBlessError(f"run {run_id} has no evaluation.json: nothing was evaluated")
    record, generation = found
    if record.override is None:
        _check_blessable(record)
        record.override = Override(
            actor=actor.strip(),
            reason=reason.strip(),
            at=now,
            via=via,
            authenticated_as=authenticated_as,
            previous_verdict=record.verdict,
        )
        record.verdict = "force_blessed"
        record.summary = summarize(record)
        if (
            artifacts.write_json(evaluation_path(run_id), record, if_generation_match=generation)
            is None
        ):
            raise ConcurrentUpdateError(f"{evaluation_path(run_id)} changed while blessing")
    ledger.update(run_id, lambda run: _record_on_run(run, record))
    for message in next_messages(record, now):
        bus.publish(message)
    return record


def _check_blessable(record: EvaluationRecord) -> None:
    if record.blessed:
        raise CannotBlessError(f"run {record.run_id} is already {record.verdict}")
    if not record.infra_passed:
        raise CannotBlessError(
            f"run {record.run_id}'s model failed its load-and-probe check and cannot be "
            "served; it cannot be force-blessed (train a new model)"
        )


def _record_on_run(run: RunRecord, record: EvaluationRecord) -> None:
    assert record.override is not None
    audit = record.override.model_dump(mode="json")
    run.lineage["evaluation_override"] = audit
    # The evaluate step's result is written once; the override amends its outputs from
    # run.json (``RunRecord.step_outputs``), or the step itself in an earlier layout.
    amended = {"verdict": record.verdict, "override": audit}
    run.step_outputs.setdefault(STEP, {}).update(amended)
    step = run.steps.get(STEP)
    if step is not None:
        step.outputs.update(amended)
    if run.state in ("rejected", "running"):
        run.state = "running"  # deploy finishes it
        run.error = None
        if STEP not in run.ends_recorded:  # evaluate's rejection is overruled, not pending
            run.ends_recorded.append(STEP)
    run.updated_at = record.override.at
