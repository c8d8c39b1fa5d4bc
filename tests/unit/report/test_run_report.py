"""The run report of a full run, of a run rejected at validation, of runs the value-skew
policy accepted or left untrained, and of hostile data."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from cascade.report import (
    RunNotFoundError,
    collect_run_report,
    render_run_report,
    write_run_report,
)
from tests.unit.report.builders import (
    DATASET,
    NEWEST_FILE,
    REJECTED_RUN_ID,
    RUN_ID,
    SKEWED_RUN_ID,
    UNTRAINED_RUN_ID,
    full_run,
    rejected_run,
    skewed_run,
    untrained_run,
)


class _Structure(HTMLParser):
    """Tags, section ids and visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids += [value for name, value in attrs if name == "id" and value]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Structure:
    structure = _Structure()
    structure.feed(html)
    return structure


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.DOTALL)
    assert match is not None, section_id
    return match.group(1)


@pytest.fixture
def full(step_context: StepContext, tmp_path: Path) -> MemoryArtifactStore:
    full_run(step_context, tmp_path)
    assert isinstance(step_context.artifacts, MemoryArtifactStore)
    return step_context.artifacts


@pytest.fixture
def rejected(tmp_path: Path) -> MemoryArtifactStore:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    rejected_run(artifacts, tmp_path)
    return artifacts


def test_a_full_run_collects_every_section_from_its_artifacts(full: MemoryArtifactStore) -> None:
    report = collect_run_report(full, RUN_ID)

    summary = report.summary
    assert (report.dataset, summary.state) == (DATASET, "succeeded")
    assert [step.name for step in summary.steps] == [
        "validate",
        "transform",
        "train",
        "training_job",
        "evaluate",
        "deploy",
    ]
    assert summary.steps[1].duration_s == 2.25
    assert summary.model_version == "2"
    assert {fact.label: fact.value for fact in summary.verdicts} == {
        "data": "accepted (0 error(s), 0 warning(s))",
        "model": "blessed",
        "deployment": "version 2 promoted",
    }
    validation = report.validation
    assert validation.missing is None
    assert validation.examples == 600
    assert {(item.feature, item.exceeded) for item in validation.drift} == {
        ("age", False),
        ("amount", False),
        ("city", False),
    }
    assert validation.drift_chart is not None
    assert "1 file(s) of credit accepted before this run" in validation.baseline_note
    assert {view.feature for view in validation.distributions} == {"age", "amount", "city"}
    training = report.training
    assert (training.epochs_trained, training.epochs_planned) == (4, 10)
    assert {(fact.label, fact.value) for fact in training.job} >= {
        ("job name", "projects/p/locations/us-central1/customJobs/123"),
        ("job state", "succeeded"),
        ("batch size", "256"),
        ("hyperparameter learning_rate", "0.01"),
        ("model family", "network"),
        ("auto: network eval loss", "0.41 (kept)"),
        ("auto: boosted_trees eval loss", "0.43"),
    }
    assert [fact.label for fact in training.job].count("job name") == 1
    assert [curve.metric for curve in training.curves] == ["loss", "auc"]
    assert (training.curves[0].final_train, training.curves[0].final_validation) == (0.43, 0.47)
    evaluation = report.evaluation
    assert evaluation.verdict == "blessed"
    assert next((check.name, check.verdict) for check in evaluation.checks) == (
        "load-and-probe",
        "pass",
    )
    assert {row.metric: (row.candidate, row.production) for row in evaluation.comparison} == {
        "loss": (0.41, 0.45),
        "accuracy": (0.79, 0.77),
        "auc": (0.83, 0.80),
    }
    assert evaluation.infra is not None
    assert evaluation.infra.passed
    deployment = report.deployment
    assert deployment.this_run_version == "2"
    assert [(v.version, v.state, v.traffic, v.this_run) for v in deployment.versions] == [
        ("2", "serving", 100, True),
        ("1", "standby", 0, False),
    ]
    assert [event.action for event in deployment.history] == [
        "promote",
        "canary",
        "deploy",
        "promote",
    ]


def test_a_full_run_renders_every_section_with_its_numbers(full: MemoryArtifactStore) -> None:
    html = render_run_report(full, RUN_ID)

    structure = _parse(html)
    assert structure.ids == [
        "summary",
        "validation",
        "training",
        "evaluation",
        "deployment",
        "serving-plan",
    ]
    assert "script" not in structure.tags
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched: opens offline
    summary = _section(html, "summary")
    assert "upload of gs://cascade-landing/credit/day-3.csv (generation 7)" in summary
    assert "2.250 s" in summary  # the transform step's duration
    assert "version 2 promoted" in summary
    validation = _section(html, "validation")
    assert "No anomalies found." in validation
    assert validation.count("<svg") == 4  # drift bars + age, amount and city distributions
    assert "Kolmogorov-Smirnov statistic" in validation  # the default numeric measure
    training = _section(html, "training")
    assert "4 of 10 (stopped early)" in training
    assert training.count("<svg") == 2  # loss and auc curves
    assert "<polyline" in training
    assert "loss: final 0.43 (train), 0.47 (eval)" in training
    evaluation = _section(html, "evaluation")
    assert "blessed" in evaluation
    assert "auc &gt;= 0.7 (overall)" in evaluation
    assert (
        '<td>loss</td><td class="num">0.41</td><td class="num">0.45</td><td class="num">-0.04</td>'
        in evaluation
    )
    assert "single row p95" in evaluation
    deployment = _section(html, "deployment")
    assert "2 (this run)" in deployment
    assert "v2 100%" in deployment  # the traffic split
    assert "<tr><th>canary share (%)</th><td>10</td></tr>" in deployment
    assert "<tr><th>promoted to 100%</th><td>yes</td></tr>" in deployment


def test_a_run_rejected_at_validation_names_the_drifted_feature_and_says_training_did_not_run(
    rejected: MemoryArtifactStore,
) -> None:
    report = collect_run_report(rejected, REJECTED_RUN_ID)
    html = render_run_report(rejected, REJECTED_RUN_ID)

    validation = report.validation
    assert validation.verdict == "rejected"
    assert [item.feature for item in validation.drift if item.exceeded] == ["amount"]
    drifted = [f for f in validation.findings if f.feature == "amount" and f.severity == "error"]
    assert "Kolmogorov-Smirnov" in drifted[0].short_description
    assert validation.distributions[0].feature == "amount"
    assert validation.distributions[0].drifted
    amount = validation.distributions[0].rows
    assert sum(row.baseline for row in amount) == pytest.approx(1.0)
    # Shifted by three standard deviations: all in the top bucket and the one above the range.
    assert amount[-2].current + amount[-1].current > 0.9
    assert amount[-1].baseline == 0.0
    assert report.training.missing == "Training did not run: the data was rejected at validation."
    assert report.evaluation.missing is not None
    assert report.deployment.missing is not None
    section = _section(html, "validation")
    assert "rejected" in section
    assert "<td>amount</td>" in section
    assert "High Kolmogorov-Smirnov statistic" in section
    assert 'amount (numeric) <span class="state state-fail">drifted</span>' in section
    assert "Training did not run: the data was rejected at validation." in _section(
        html, "training"
    )
    assert "Nothing was deployed from this run" in _section(html, "deployment")


def test_a_run_accepted_with_a_value_skew_shows_the_skew_as_retrain_and_its_train_reason(
    tmp_path: Path,
) -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    skewed_run(artifacts, tmp_path)

    report = collect_run_report(artifacts, SKEWED_RUN_ID)
    html = render_run_report(artifacts, SKEWED_RUN_ID)

    validation = report.validation
    assert validation.verdict == "accepted"
    assert [(f.feature, f.severity) for f in validation.findings] == [("amount", "retrain")]
    assert (validation.errors, validation.value_skews, validation.warnings) == (0, 1, 0)
    section = _section(html, "validation")
    assert "0 error(s), 1 value skew(s) (retraining), 0 warning(s)" in section
    assert '<span class="state state-retrain">retrain</span>' in section


def test_a_run_the_value_skew_policy_did_not_train_says_why_in_its_training_section(
    tmp_path: Path,
) -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    untrained_run(artifacts, tmp_path)

    report = collect_run_report(artifacts, UNTRAINED_RUN_ID)

    assert report.training.missing == (
        "Training did not run: no train request: training.retrain_on is value_skew and "
        "credit/day-2.csv brought no value skew."
    )


def test_data_with_markup_is_escaped_everywhere(tmp_path: Path) -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    hostile = "<script>alert(1)</script>"
    rejected_run(artifacts, tmp_path, city=("a", "b", hostile))
    found = artifacts.read_model(RunPaths(REJECTED_RUN_ID).record, RunRecord)
    assert found is not None
    record = found[0]
    record.error = f"validate: {hostile}"
    artifacts.write_json(RunPaths(REJECTED_RUN_ID).record, record)

    html = render_run_report(artifacts, REJECTED_RUN_ID)

    assert hostile not in html
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "script" not in _parse(html).tags


def test_write_run_report_stores_html_beside_the_run(full: MemoryArtifactStore) -> None:
    uri = write_run_report(full, RUN_ID)

    name = f"runs/{RUN_ID}/report.html"
    assert RunPaths(RUN_ID).report == name
    assert uri == f"gs://cascade-artifacts/{name}"
    stored = full.objects[name]
    assert stored.content_type.startswith("text/html")
    assert stored.data.decode().startswith("<!doctype html>")
    assert f"Run <code>{RUN_ID}</code>" in stored.data.decode()


def test_a_run_without_a_record_is_an_error() -> None:
    with pytest.raises(RunNotFoundError, match="no run credit-missing"):
        render_run_report(MemoryArtifactStore("cascade-artifacts"), "credit-missing")


def test_a_run_without_history_points_at_its_tensorboard_logs(full: MemoryArtifactStore) -> None:
    full.delete(f"runs/{RUN_ID}/training/history.json")

    report = collect_run_report(full, RUN_ID)
    html = render_run_report(full, RUN_ID)

    assert report.training.curves == []
    assert report.training.epochs_trained == 4  # from metrics.json
    note = report.training.history_note
    assert note is not None
    assert f"runs/{RUN_ID}/training/history.json does not exist" in note
    assert f"gs://cascade-artifacts/runs/{RUN_ID}/training/logs/" in note  # AIP_TENSORBOARD_LOG_DIR
    assert "No per-epoch history" in _section(html, "training")


def test_a_retrain_request_in_progress_says_what_has_not_happened(
    step_context: StepContext,
) -> None:
    run_id = "credit-r0123456789abcdef"
    step_context.ledger.ensure(
        RunRecord.model_validate(
            {
                "run_id": run_id,
                "dataset": DATASET,
                "trigger": {"kind": "request", "request_id": "nightly"},
                "created_at": "2026-11-27T12:00:00Z",
                "updated_at": "2026-11-27T12:00:00Z",
                "steps": {
                    "train": {
                        "state": "running",
                        "attempts": 1,
                        "started_at": "2026-11-27T12:00:00Z",
                    }
                },
            }
        )
    )

    report = collect_run_report(step_context.artifacts, run_id)

    assert report.summary.trigger == "train request nightly"
    assert report.validation.missing is not None
    assert "started by a train request" in report.validation.missing
    assert report.training.missing is None  # the train step runs; its outputs do not exist yet
    assert report.training.history_note is not None
    assert report.evaluation.missing == "Evaluation has not run yet: the run is still in progress."
    assert report.deployment.missing is not None
    assert "still in progress" in report.deployment.missing
    assert '<section id="deployment">' in render_run_report(step_context.artifacts, run_id)


def test_a_corrupt_artifact_is_reported_not_raised(full: MemoryArtifactStore) -> None:
    full.write(f"runs/{RUN_ID}/training/infra_check.json", b"{not json")
    full.write(f"runs/{RUN_ID}/validation/anomalies.pbtxt", b"this is { not a proto")

    report = collect_run_report(full, RUN_ID)

    assert report.evaluation.infra is not None
    assert report.evaluation.infra.note is not None
    assert "is not a valid InfraCheck" in report.evaluation.infra.note
    assert report.validation.missing is not None
    assert "is not a TFMD Anomalies text proto" in report.validation.missing


def test_a_full_run_compares_both_models_on_the_newest_files_and_names_them(
    full: MemoryArtifactStore,
) -> None:
    evaluation = collect_run_report(full, RUN_ID).evaluation
    html = _section(render_run_report(full, RUN_ID), "evaluation")

    assert evaluation.newest_files == [NEWEST_FILE]
    assert {
        row.metric: (row.candidate, row.production) for row in evaluation.newest_comparison
    } == {
        "loss": (0.38, 0.52),
        "auc": (0.84, 0.74),
    }
    assert evaluation.newest_note is not None
    assert f"120 eval rows from the newest accepted files: {NEWEST_FILE}" in evaluation.newest_note
    assert "Candidate vs production model on the newest files" in html
    assert (
        '<td>loss</td><td class="num">0.38</td><td class="num">0.52</td><td class="num">-0.14</td>'
        in html
    )
