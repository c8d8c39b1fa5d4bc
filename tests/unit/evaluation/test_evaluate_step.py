"""The evaluate step end to end over the in-memory store: evaluation.json, messages, run."""

from __future__ import annotations

import base64
import json
from typing import Any

import flask
import pytest

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, ModelBlessed, RunEnded
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunLedger
from cascade.evaluation.override import CannotBlessError, force_bless
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.state import DeployedVersion, ServingState
from cascade.steps.bless_http import handle_http_bless
from cascade.steps.evaluate import handle_model_trained
from tests.unit.evaluation.builders import (
    DATASET,
    DEPLOYED_URI,
    MODEL_URI,
    NOW,
    RUN_ID,
    infra_check,
    metrics_report,
    model_metrics,
    model_trained,
    start_run,
    store_training_outputs,
)

AUC_CONFIG = b"""
evaluation:
  first_run: absolute_only
  thresholds:
    - {metric: auc, tier: blocking, lower_bound: 0.70}
    - {metric: auc, tier: warning, lower_bound: 0.85}
"""


@pytest.fixture
def ctx(step_context: StepContext) -> StepContext:
    step_context.artifacts.write(DatasetPaths(DATASET).pipeline_config, AUC_CONFIG)
    start_run(step_context.ledger)
    return step_context


def published(ctx: StepContext) -> list[Any]:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus.published


def stored_record(ctx: StepContext) -> EvaluationRecord:
    found = ctx.artifacts.read_model(evaluation_path(RUN_ID), EvaluationRecord)
    assert found is not None
    return found[0]


def evaluate(ctx: StepContext, auc: float, *, probe_passes: bool = True) -> None:
    report = metrics_report(model_metrics(MODEL_URI, {"auc": auc, "loss": 0.4}))
    store_training_outputs(
        ctx.artifacts,
        report,
        infra_check(
            passed=probe_passes, reasons=[] if probe_passes else ["typical: the call failed"]
        ),
    )
    handle_model_trained(ctx, model_trained(), event_id="e1")


def test_a_model_above_every_threshold_is_blessed(ctx: StepContext) -> None:
    evaluate(ctx, auc=0.9)

    record = stored_record(ctx)
    assert record.verdict == "blessed"
    assert record.first_run
    assert {c.name for c in record.checks} == {
        "load-and-probe",
        "auc >= 0.7 (overall)",
        "auc >= 0.85 (overall)",
    }
    [blessed] = published(ctx)
    assert isinstance(blessed, ModelBlessed)
    assert (blessed.model_uri, blessed.warnings) == (MODEL_URI, [])
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "running"
    assert run.steps["evaluate"].outputs["verdict"] == "blessed"


def test_a_warning_blesses_with_an_alert_shown_on_the_run(ctx: StepContext) -> None:
    evaluate(ctx, auc=0.8)

    blessed, alert = published(ctx)
    assert isinstance(blessed, ModelBlessed)
    assert isinstance(alert, Alert)
    assert blessed.warnings == ["auc >= 0.85 (overall): auc = 0.8"]
    assert alert.severity == "WARNING"
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.steps["evaluate"].outputs["warnings"] == blessed.warnings
    assert run.steps["evaluate"].state == "succeeded"


def test_a_blocking_failure_rejects_the_run_and_blesses_nothing(ctx: StepContext) -> None:
    evaluate(ctx, auc=0.6)

    [alert, ended] = published(ctx)
    assert ended == RunEnded(dataset=DATASET, run_id=RUN_ID, state="rejected")
    assert isinstance(alert, Alert)
    assert alert.severity == "ERROR"
    assert alert.details["failed_checks"][0]["name"] == "auc >= 0.7 (overall)"
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "rejected"
    assert run.error is not None
    assert "auc >= 0.7 (overall): auc = 0.6" in run.error
    assert stored_record(ctx).verdict == "not_blessed"


def test_a_failed_probe_rejects_even_a_perfect_model(ctx: StepContext) -> None:
    evaluate(ctx, auc=0.99, probe_passes=False)

    assert not any(isinstance(m, ModelBlessed) for m in published(ctx))
    record = stored_record(ctx)
    assert record.verdict == "not_blessed"
    assert record.checks[0].detail == "typical: the call failed"


def test_the_deployed_model_is_the_baseline(ctx: StepContext) -> None:
    state = ServingState(
        dataset=DATASET,
        target="local",
        endpoint=DATASET,
        updated_at=NOW,
        versions=[
            DeployedVersion(
                version="1", run_id="old", state="serving", model_uri=DEPLOYED_URI, deployed_at=NOW
            )
        ],
        traffic={"1": 100},
    )
    ctx.artifacts.write_json(DatasetPaths(DATASET).serving, state)
    ctx.artifacts.write(
        DatasetPaths(DATASET).pipeline_config,
        b"evaluation: {thresholds: [{metric: auc, max_regression: 0.01}]}",
    )
    report = metrics_report(
        model_metrics(MODEL_URI, {"auc": 0.80}), model_metrics(DEPLOYED_URI, {"auc": 0.85})
    )
    store_training_outputs(ctx.artifacts, report, infra_check())

    handle_model_trained(ctx, model_trained(), event_id="e1")

    record = stored_record(ctx)
    assert (record.verdict, record.first_run) == ("not_blessed", False)
    assert record.deployed_model_uri == record.baseline_model_uri == DEPLOYED_URI


def test_a_run_whose_training_job_failed_is_not_evaluated(ctx: StepContext) -> None:
    ctx.ledger.update(RUN_ID, lambda run: setattr(run, "state", "failed"))
    store_training_outputs(
        ctx.artifacts, metrics_report(model_metrics(MODEL_URI, {"auc": 0.9})), infra_check()
    )

    handle_model_trained(ctx, model_trained(), event_id="e1")

    assert published(ctx) == []
    assert ctx.artifacts.read(evaluation_path(RUN_ID)) is None
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "failed"
    assert run.steps["evaluate"].outputs == {"verdict": "not_evaluated"}


def test_no_model_or_no_metrics_fails_the_run_with_a_clear_error(ctx: StepContext) -> None:
    handle_model_trained(ctx, model_trained(model_uri=None), event_id="e1")

    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "failed"
    assert run.error is not None
    assert "names no model" in run.error
    [alert, ended] = published(ctx)
    assert ended == RunEnded(dataset=DATASET, run_id=RUN_ID, state="failed")
    assert isinstance(alert, Alert)


def test_missing_metrics_json_is_a_permanent_error(ctx: StepContext) -> None:
    handle_model_trained(ctx, model_trained(), event_id="e1")

    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.error is not None
    assert "metrics.json does not exist" in run.error


# -- the manual override ------------------------------------------------------------------


def bless(ctx: StepContext, **fields: Any) -> EvaluationRecord:
    values: dict[str, Any] = {
        "artifacts": ctx.artifacts,
        "ledger": ctx.ledger,
        "bus": ctx.bus,
        "run_id": RUN_ID,
        "actor": "ana@example.com",
        "now": NOW,
        "reason": "known label shift in Q4, approved by risk",
        "via": "cli",
    }
    values.update(fields)
    return force_bless(**values)


def test_force_bless_is_audited_and_publishes_model_blessed(ctx: StepContext) -> None:
    evaluate(ctx, auc=0.6)
    published(ctx).clear()

    record = bless(ctx)

    assert record.verdict == "force_blessed"
    assert record.override is not None
    assert record.override.previous_verdict == "not_blessed"
    assert stored_record(ctx).override == record.override
    blessed, alert = published(ctx)
    assert isinstance(blessed, ModelBlessed)
    assert isinstance(alert, Alert)
    assert "force-blessed by ana@example.com" in blessed.warnings[-1]
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "running"
    assert run.error is None
    assert run.lineage["evaluation_override"]["actor"] == "ana@example.com"
    assert run.steps["evaluate"].outputs["override"]["reason"].startswith("known label shift")


class _Crash(BaseException):
    """The process dies here (no ``except Exception`` sees it)."""


def test_force_bless_overrules_a_rejection_run_json_has_not_recorded_yet(
    ctx: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate's result says the run is rejected, but its process died before run.json
    said so: the bless still leaves the run running, and evaluate's redelivery does not
    bring the rejection back."""
    with monkeypatch.context() as patched:

        def crash(self: RunLedger, run_id: str, mutate: Any) -> None:
            raise _Crash

        patched.setattr(RunLedger, "update", crash)
        with pytest.raises(_Crash):
            evaluate(ctx, auc=0.6)
    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert run.state == "rejected"

    bless(ctx)
    handle_model_trained(ctx, model_trained(), event_id="e1-again")

    run = ctx.ledger.get(RUN_ID)
    assert run is not None
    assert (run.state, run.error) == ("running", None)
    assert run.steps["evaluate"].outputs["verdict"] == "force_blessed"


def test_force_bless_approves_a_first_run_awaiting_approval(ctx: StepContext) -> None:
    ctx.artifacts.write(
        DatasetPaths(DATASET).pipeline_config, b"evaluation: {first_run: manual_approval}"
    )
    evaluate(ctx, auc=0.9)
    assert stored_record(ctx).verdict == "awaiting_approval"
    assert not any(isinstance(m, ModelBlessed) for m in published(ctx))

    bless(ctx)

    assert isinstance(published(ctx)[-2], ModelBlessed)


def test_force_bless_is_refused_for_unservable_or_blessed_or_unknown_runs(ctx: StepContext) -> None:
    with pytest.raises(CannotBlessError, match=r"no evaluation\.json"):
        bless(ctx)
    evaluate(ctx, auc=0.99, probe_passes=False)
    with pytest.raises(CannotBlessError, match="load-and-probe"):
        bless(ctx)
    evaluate_again = stored_record(ctx).model_copy(update={"verdict": "blessed"})
    ctx.artifacts.write_json(evaluation_path(RUN_ID), evaluate_again)
    with pytest.raises(CannotBlessError, match="already blessed"):
        bless(ctx)


def test_force_bless_twice_republishes_without_rewriting_the_audit(ctx: StepContext) -> None:
    evaluate(ctx, auc=0.6)
    first = bless(ctx)

    second = bless(ctx, actor="someone-else", reason="a different reason")

    assert second.override == first.override
    assert sum(isinstance(m, ModelBlessed) for m in published(ctx)) == 2


def id_token(email: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"email": email}).encode()).decode().rstrip("=")
    return f"Bearer eyJhbGciOiJSUzI1NiJ9.{payload}.c2lnbmF0dXJl"


def post(ctx: StepContext, body: Any, headers: dict[str, str] | None = None) -> tuple[Any, int]:
    app = flask.Flask("test")
    with app.test_request_context("/", method="POST", json=body, headers=headers or {}):
        return handle_http_bless(ctx, flask.request)


def test_http_override_records_the_authenticated_caller(ctx: StepContext) -> None:
    evaluate(ctx, auc=0.6)
    body = {"run_id": RUN_ID, "reason": "accepted regression", "actor": "ana"}

    answer, status = post(ctx, body, {"Authorization": id_token("ana@example.com")})

    assert status == 200, answer
    assert answer["verdict"] == "force_blessed"
    assert answer["override"]["authenticated_as"] == "ana@example.com"
    assert stored_record(ctx).override is not None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"run_id": RUN_ID, "actor": "ana"}, 400, "reason"),
        ({"run_id": RUN_ID, "reason": "ok then", "actor": "ana", "force": True}, 400, "force"),
        ({"run_id": "credit-unknown", "reason": "ok then", "actor": "ana"}, 404, "no run"),
        ({"run_id": RUN_ID, "reason": "ok then", "actor": "ana"}, 409, "no evaluation.json"),
        ([], 400, "JSON object"),
    ],
)
def test_http_override_answers_bad_requests_clearly(
    ctx: StepContext, body: Any, status: int, message: str
) -> None:
    answer, got = post(ctx, body)

    assert got == status
    assert message in answer["error"]


def test_cannot_bless_is_a_bad_request() -> None:
    assert issubclass(CannotBlessError, BadRequestError)


def test_the_record_names_the_newest_files_and_judges_a_required_regression_on_them(
    ctx: StepContext,
) -> None:
    state = ServingState(
        dataset=DATASET,
        target="local",
        endpoint=DATASET,
        updated_at=NOW,
        versions=[
            DeployedVersion(
                version="1", run_id="old", state="serving", model_uri=DEPLOYED_URI, deployed_at=NOW
            )
        ],
        traffic={"1": 100},
    )
    ctx.artifacts.write_json(DatasetPaths(DATASET).serving, state)
    ctx.artifacts.write(
        DatasetPaths(DATASET).pipeline_config,
        b"evaluation: {thresholds: [{metric: loss, max_regression: 0.02, relative: true, "
        b"slice: newest_files}]}",
    )
    newest = "gs://cascade-landing/credit/day-9.csv#9"
    report = metrics_report(
        {
            **model_metrics(MODEL_URI, {"loss": 0.40}),
            "newest_files": {"examples": 300, "metrics": {"loss": 0.62}},
        },
        {
            **model_metrics(DEPLOYED_URI, {"loss": 0.41}),
            "newest_files": {"examples": 300, "metrics": {"loss": 0.55}},
        },
        newest_files=[newest],
    )
    store_training_outputs(ctx.artifacts, report, infra_check())

    handle_model_trained(ctx, model_trained(), event_id="e1")

    record = stored_record(ctx)
    assert record.newest_files == [newest]
    assert record.verdict == "not_blessed"
    [failed] = record.failed_checks()
    assert (failed.slice, failed.value, failed.baseline_value) == ("newest_files", 0.62, 0.55)
    assert "newest_files" in record.summary
