"""The policy per kind of finding (docs/validation.md, "Policy"): schema skews and broken
data quarantine, value skews are accepted, alerted and retrain, notes only note.

From the severity table to the chain: a healthy file whose distribution moved is
accepted with a WARNING alert and asks transform for training with a reason naming the
skews; a schema-broken one is still quarantined; ``drift: error`` restores quarantine;
``training.retrain_on: value_skew`` trains only on skews (or while no model serves).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cascade.cli.sample_data import SAMPLE_PIPELINE_CONFIG, sample_csv
from cascade.core.context import StepContext
from cascade.core.errors import InvalidConfigError
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, DataValidated, TrainRequest
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import parse_pipeline_config
from cascade.core.runs import run_id_for_object
from cascade.core.validation_config import Check, Severity, ValidationConfig
from cascade.serving.state import DeployedVersion, ServingState, update_serving_state
from cascade.steps.transform import handle_data_validated
from cascade.steps.validate import handle_object_finalized, value_skews_of
from cascade.validation.anomalies import ValidationResult
from cascade.validation.drift_checks import DriftMeasurement
from cascade.validation.findings import anomaly
from tests.unit.conftest import Clock
from tests.unit.validation.builders import moved_sample_csv
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context

LANDING, DATASET = "cascade-landing", "credit"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "validation.md"

QUARANTINE, RETRAIN, NOTE = "quarantine", "accept and retrain", "accept with a note"
POLICY: dict[Check, str] = {
    Check.MISSING_FEATURE: QUARANTINE,
    Check.UNEXPECTED_FEATURE: NOTE,
    Check.TYPE: QUARANTINE,
    Check.PRESENCE: QUARANTINE,
    Check.VALUE_COUNT: QUARANTINE,
    Check.DOMAIN: QUARANTINE,
    Check.RANGE: QUARANTINE,
    Check.NAN_INF: QUARANTINE,
    Check.DRIFT: RETRAIN,
    Check.EXAMPLE_COUNT: NOTE,
    Check.MISSING_SHARE: RETRAIN,
    Check.LABEL_SHIFT: RETRAIN,
    Check.UNSEEN_VALUES: RETRAIN,
    Check.EXTREME_DRIFT: QUARANTINE,
    Check.FEATURE_COUNT: QUARANTINE,
}
"""The decision table of docs/validation.md, "Policy", under the default severities."""


def _outcome(result: ValidationResult) -> str:
    if not result.accepted:
        return QUARANTINE
    return RETRAIN if result.value_skews else NOTE


@pytest.mark.parametrize("check", list(Check))
def test_each_kind_of_finding_has_the_documented_outcome_under_the_default_severities(
    check: Check,
) -> None:
    severity = ValidationConfig().severities.of(check)
    finding = anomaly("f", check, 0, "short", "described").graded(severity)

    assert _outcome(ValidationResult([finding])) == POLICY[check]


def test_the_policy_table_in_the_docs_lists_every_check_with_its_default_severity() -> None:
    text = DOCS.read_text(encoding="utf-8")
    policy = text.split("## Policy", 1)[1].split("\n## ", 1)[0]
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(\w+)` \| `(\w+)` \|", policy, flags=re.MULTILINE)
    }
    defaults = ValidationConfig().severities

    assert rows == {check.value: defaults.of(check).value for check in Check}


def test_a_value_skew_names_the_largest_exceeded_measurement_of_its_feature() -> None:
    drift = anomaly("amount", Check.DRIFT, 0, "High drift", "moved").graded(Severity.RETRAIN)
    missing = anomaly("age", Check.MISSING_SHARE, 0, "More missing", "rose").graded(
        Severity.RETRAIN
    )
    result = ValidationResult(
        [drift, missing],
        drift=[
            DriftMeasurement("amount", "jensen_shannon_divergence", 0.15, 0.1),
            DriftMeasurement("amount", "ks", 0.42, 0.1),
            DriftMeasurement("amount", "l_infinity", 0.9, 1.0),  # within its threshold
            DriftMeasurement("age", "ks", 0.3, 0.1),  # a drift of age: no drift finding
            DriftMeasurement("age", "missing_share", 0.2, 0.05, Check.MISSING_SHARE),
        ],
    )

    skews = value_skews_of(result)

    assert [skew.brief() for skew in skews] == [
        "drift in 'amount' (ks 0.42 > 0.1)",
        "missing share in 'age' (missing_share 0.2 > 0.05)",
    ]
    assert skews[0].description == "moved"


def test_retrain_on_accepts_only_every_file_or_value_skew() -> None:
    chosen = parse_pipeline_config("training: {retrain_on: value_skew}\n", where="p.yaml")
    default = parse_pipeline_config("", where="p.yaml")

    assert chosen.training.retrain_on == "value_skew"
    assert default.training.retrain_on == "every_file"
    with pytest.raises(InvalidConfigError, match=r"training\.retrain_on"):
        parse_pipeline_config("training: {retrain_on: sometimes}\n", where="p.yaml")


# The chain, validate then transform, over an in-memory Cloud Storage.


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


def _configure(ctx: StepContext, extra: str = "") -> None:
    text = SAMPLE_PIPELINE_CONFIG + extra
    ctx.artifacts.write(DatasetPaths(DATASET).pipeline_config, text.encode())


def _without(data: bytes, column: str) -> bytes:
    table = list(csv.reader(io.StringIO(data.decode())))
    index = table[0].index(column)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(row[:index] + row[index + 1 :] for row in table)
    return out.getvalue().encode()


def _in_cents(data: bytes, column: str) -> bytes:
    """``column`` multiplied by 100: an upstream that changed its unit."""
    table = list(csv.reader(io.StringIO(data.decode())))
    index = table[0].index(column)
    for row in table[1:]:
        row[index] = f"{float(row[index]) * 100:.2f}"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    return out.getvalue().encode()


def _upload(ctx: StepContext, storage: FakeStorageClient, name: str, data: bytes) -> str:
    """Land ``data`` as ``credit/<name>``, validate it and, if accepted, transform it;
    the run id."""
    generation = storage.put(LANDING, f"{DATASET}/{name}", data)
    event = StorageObjectEvent(
        event_id=f"event-{name}-{generation}",
        bucket=LANDING,
        name=f"{DATASET}/{name}",
        generation=generation,
        size=len(data),
    )
    outcome = handle_object_finalized(ctx, event)
    assert outcome is not None
    run_id = run_id_for_object(DATASET, LANDING, event.name, generation)
    for message in _bus(ctx).of_type(DataValidated):
        if message.run_id == run_id:
            handle_data_validated(ctx, message, event_id=f"transform-{run_id}")
    return run_id


def _requests(ctx: StepContext, run_id: str) -> list[TrainRequest]:
    return [r for r in _bus(ctx).of_type(TrainRequest) if r.run_id == run_id]


def _serving_model(ctx: StepContext) -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    version = DeployedVersion(
        version="1", run_id="credit-old", model_uri="gs://m/1", state="serving", deployed_at=now
    )
    update_serving_state(
        ctx.artifacts,
        DATASET,
        lambda _: ServingState(
            dataset=DATASET,
            target="local",
            endpoint=DATASET,
            versions=[version],
            traffic={"1": 100},
            updated_at=now,
        ),
    )


def test_a_healthy_file_whose_world_moved_is_accepted_alerted_and_retrains_with_the_reason(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    _configure(ctx)
    first = _upload(ctx, storage, "2026-01.csv", sample_csv(2000, seed=1))

    run_id = _upload(ctx, storage, "2026-02.csv", moved_sample_csv(1000, seed=8))

    run = ctx.ledger.get(run_id)
    assert run is not None
    assert run.steps["validate"].state == "succeeded", run.steps["validate"]
    skewed = {skew["feature"] for skew in run.steps["validate"].outputs["value_skews"]}
    assert {"income", "credit_score", "employment"} <= skewed
    [alert] = [a for a in _bus(ctx).of_type(Alert) if a.run_id == run_id]
    assert (alert.severity, alert.step) == ("WARNING", "validate")
    assert "value skew in" in alert.summary
    assert "'income'" in " ".join(alert.details["value_skews"])
    [request] = _requests(ctx, run_id)
    assert request.reason.startswith("value skew in credit/2026-02.csv: drift in ")
    assert run.steps["transform"].outputs["train_reason"] == request.reason
    assert run.steps["transform"].outputs["files"] == 2  # all accepted data, with the new file
    [plain] = _requests(ctx, first)
    assert not plain.reason.startswith("value skew")


def test_a_schema_broken_file_is_quarantined_and_asks_for_nothing(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    _configure(ctx)
    _upload(ctx, storage, "2026-01.csv", sample_csv(2000, seed=1))

    run_id = _upload(
        ctx, storage, "2026-02.csv", _without(moved_sample_csv(1000, seed=8), "term_months")
    )

    run = ctx.ledger.get(run_id)
    assert run is not None
    assert run.state == "rejected"
    assert "term_months" in (run.error or "")
    assert "transform" not in run.steps
    assert _requests(ctx, run_id) == []
    [alert] = [a for a in _bus(ctx).of_type(Alert) if a.run_id == run_id]
    assert alert.severity == "ERROR"


def test_an_extreme_drift_that_looks_like_a_unit_change_is_quarantined(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    _configure(ctx)
    _upload(ctx, storage, "2026-01.csv", sample_csv(2000, seed=1))

    run_id = _upload(ctx, storage, "2026-02.csv", _in_cents(sample_csv(1000, seed=2), "income"))

    run = ctx.ledger.get(run_id)
    assert run is not None
    assert run.state == "rejected"
    errors = run.steps["validate"].outputs["errors"]
    assert any(e.startswith("feature 'income': Extreme drift") for e in errors), errors
    assert "transform" not in run.steps
    assert _requests(ctx, run_id) == []


def test_drift_set_to_error_in_the_pipeline_config_quarantines_the_moved_file_again(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    _configure(ctx, "validation:\n  severities: {drift: error, label_shift: error}\n")
    _upload(ctx, storage, "2026-01.csv", sample_csv(2000, seed=1))

    run_id = _upload(ctx, storage, "2026-02.csv", moved_sample_csv(1000, seed=8))

    run = ctx.ledger.get(run_id)
    assert run is not None
    assert run.state == "rejected"
    errors = run.steps["validate"].outputs["errors"]
    assert {"income", "credit_score", "employment"} <= {e.split("'")[1] for e in errors}
    assert run.steps["validate"].outputs["value_skews"] == []
    assert _requests(ctx, run_id) == []


def test_retrain_on_value_skew_trains_the_first_file_and_then_only_a_skewed_one(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    _configure(ctx, "  retrain_on: value_skew\n")  # inside the sample's training section
    first = _upload(ctx, storage, "2026-01.csv", sample_csv(2000, seed=1))
    _serving_model(ctx)  # the first file's model was deployed

    plain = _upload(ctx, storage, "2026-02.csv", sample_csv(1000, seed=2))
    moved = _upload(ctx, storage, "2026-03.csv", moved_sample_csv(1000, seed=8))

    assert [r.reason.split(";")[0] for r in _requests(ctx, first)] == ["no model serves credit yet"]
    assert _requests(ctx, plain) == []
    plain_run = ctx.ledger.get(plain)
    assert plain_run is not None
    assert plain_run.state == "succeeded"
    assert "brought no value skew" in plain_run.steps["transform"].outputs["train_request"]
    [request] = _requests(ctx, moved)
    assert request.reason.startswith("value skew in credit/2026-03.csv: ")


def test_the_pipeline_configs_label_is_judged_for_label_shift_not_drift(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    _configure(ctx)  # label: defaulted
    _upload(ctx, storage, "2026-01.csv", sample_csv(2000, seed=1))

    run_id = _upload(ctx, storage, "2026-02.csv", moved_sample_csv(1000, seed=8))

    run = ctx.ledger.get(run_id)
    assert run is not None
    checks = {
        (skew["feature"], skew["check"]) for skew in run.steps["validate"].outputs["value_skews"]
    }
    assert ("defaulted", "label_shift") in checks  # the moved sample defaults more often
    assert ("defaulted", "drift") not in checks
