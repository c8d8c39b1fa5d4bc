"""``cascade report RUN_ID`` against a stand-in for the local cloud's artifacts bucket,
and its best-effort refresh of the dataset's serving plan (the local BigQuery's own
tests are in tests/unit/planning/test_stored_serving_plan.py)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from cascade.cli import report as cli_report
from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.settings import Settings
from cascade.localcloud.processes import free_loopback_port
from cascade.localcloud.state_file import CloudState
from cascade.report.serving_plan import StoredServingPlan, save_serving_plan, serving_plan_path
from cascade.serving.plan import advise
from tests.unit.report.builders import (
    DATASET,
    REJECTED_RUN_ID,
    RUN_ID,
    LocalCloudStandIn,
    full_run,
    rejected_run,
)


class PlanSettings:
    """``control.running_settings`` as the refresh calls it: counts the calls, and
    answers ``settings`` (None: the local cloud is not running)."""

    def __init__(self) -> None:
        self.calls = 0
        self.settings: Settings | None = None

    def __call__(self, local: object) -> Settings:
        self.calls += 1
        if self.settings is None:
            raise AssertionError("the serving plan was refreshed")
        return self.settings


@pytest.fixture
def plan_settings(monkeypatch: pytest.MonkeyPatch) -> PlanSettings:
    recorder = PlanSettings()
    monkeypatch.setattr(cli_report.control, "running_settings", recorder)
    running = CloudState.model_construct()
    monkeypatch.setattr(cli_report.control, "status", lambda local: running)
    return recorder


def _stand_in(monkeypatch: pytest.MonkeyPatch, store: MemoryArtifactStore) -> None:
    monkeypatch.setattr(cli_report, "LocalCloudClient", LocalCloudStandIn(store))


@pytest.fixture
def artifacts(
    step_context: StepContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plan_settings: PlanSettings,
) -> MemoryArtifactStore:
    full_run(step_context, tmp_path)
    store = step_context.artifacts
    assert isinstance(store, MemoryArtifactStore)
    _stand_in(monkeypatch, store)
    return store


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.DOTALL)
    assert match is not None, section_id
    return match.group(1)


def _unreachable_bigquery() -> Settings:
    """Settings whose BigQuery is a loopback port nothing listens on."""
    return Settings(
        project="cascade-local",
        bigquery_emulator_host=f"http://127.0.0.1:{free_loopback_port()}",
    )


def test_report_writes_to_the_bucket_and_a_local_file(
    artifacts: MemoryArtifactStore, tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "run.html"

    result = CliRunner().invoke(cli_report.report, [RUN_ID, "--out", str(out), "--no-serving-plan"])

    assert result.exit_code == 0, result.output
    uri = f"gs://cascade-artifacts/runs/{RUN_ID}/report.html"
    assert result.output.splitlines() == [f"report: {uri}", f"local copy: {out}"]
    stored = artifacts.objects[f"runs/{RUN_ID}/report.html"].data.decode()
    assert out.read_text(encoding="utf-8") == stored
    assert '<section id="deployment">' in stored


def test_report_refuses_a_run_id_that_is_not_a_file_name(artifacts: MemoryArtifactStore) -> None:
    result = CliRunner().invoke(cli_report.report, ["../../etc/passwd"])

    assert result.exit_code == 2
    assert "a run id is lowercase letters" in result.output


def test_report_of_an_unknown_run_fails_with_its_reason(artifacts: MemoryArtifactStore) -> None:
    result = CliRunner().invoke(cli_report.report, ["credit-unknown"])

    assert result.exit_code == 1
    assert "no run credit-unknown" in result.output


def test_no_serving_plan_skips_the_refresh_and_the_section_says_how_to_get_one(
    artifacts: MemoryArtifactStore, plan_settings: PlanSettings, tmp_path: Path
) -> None:
    out = tmp_path / "run.html"

    result = CliRunner().invoke(cli_report.report, [RUN_ID, "--out", str(out), "--no-serving-plan"])

    assert result.exit_code == 0, result.output
    assert plan_settings.calls == 0
    assert result.stderr == ""
    section = _section(out.read_text(encoding="utf-8"), "serving-plan")
    assert f"cascade serving-plan {DATASET} --save" in section
    assert "No fresh serving plan" not in section
    assert serving_plan_path(DATASET) not in artifacts.objects


def test_an_unreachable_bigquery_still_renders_the_report_with_a_one_line_note(
    artifacts: MemoryArtifactStore,
    plan_settings: PlanSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan_settings.settings = _unreachable_bigquery()
    monkeypatch.setattr(cli_report, "PLAN_DEADLINE_S", 1.0)
    out = tmp_path / "run.html"

    started = time.monotonic()
    result = CliRunner().invoke(cli_report.report, [RUN_ID, "--out", str(out)])
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert elapsed < 30, "the refresh waited past its deadline"  # the client's own: 600 s
    assert plan_settings.calls == 1
    uri = f"gs://cascade-artifacts/runs/{RUN_ID}/report.html"
    assert result.stdout.splitlines() == [f"report: {uri}", f"local copy: {out}"]
    [printed] = result.stderr.splitlines()
    assert printed.startswith("serving plan: not refreshed: ")
    assert "Connection refused" in printed or "Timeout" in printed
    section = _section(out.read_text(encoding="utf-8"), "serving-plan")
    [note] = re.findall(
        r'<p class="missing">(No fresh serving plan for this report: [^<]*)</p>', section
    )
    assert "\n" not in note
    assert len(note) < 400
    assert f"cascade serving-plan {DATASET} --save" in section  # and how to get one
    assert serving_plan_path(DATASET) not in artifacts.objects


def test_a_failed_refresh_keeps_showing_the_stored_plan_under_the_note(
    artifacts: MemoryArtifactStore,
    plan_settings: PlanSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    earlier = StoredServingPlan(
        dataset=DATASET,
        endpoint=DATASET,
        table="cascade-local.cascade_serving_logs.request_response_logging",
        key_field="key",
        start=now - timedelta(days=7),
        end=now,
        computed_at=now,
        plan=advise({"a": 3, "b": 1}, window_s=7 * 86400.0),
    )
    save_serving_plan(artifacts, earlier)
    before = artifacts.objects[serving_plan_path(DATASET)].data
    plan_settings.settings = _unreachable_bigquery()
    monkeypatch.setattr(cli_report, "PLAN_DEADLINE_S", 1.0)
    out = tmp_path / "run.html"

    result = CliRunner().invoke(cli_report.report, [RUN_ID, "--out", str(out)])

    assert result.exit_code == 0, result.output
    section = _section(out.read_text(encoding="utf-8"), "serving-plan")
    assert "No fresh serving plan for this report: " in section
    assert "Recommended: <strong>static</strong>" in section
    assert "computed 2026-11-30 12:00:00 UTC" in section
    assert artifacts.objects[serving_plan_path(DATASET)].data == before


def test_a_run_with_nothing_deployed_does_not_read_the_request_log(
    plan_settings: PlanSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    rejected_run(store, tmp_path)
    _stand_in(monkeypatch, store)
    out = tmp_path / "run.html"

    result = CliRunner().invoke(cli_report.report, [REJECTED_RUN_ID, "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert plan_settings.calls == 0
    assert result.stderr == ""
    section = _section(out.read_text(encoding="utf-8"), "serving-plan")
    assert f"cascade serving-plan {DATASET} --save" in section
