"""``cascade report RUN_ID`` against a stand-in for the local cloud's artifacts bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cascade.cli import report as cli_report
from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore
from cascade.localcloud.state_file import CloudState
from tests.unit.report.builders import RUN_ID, full_run


class _LocalCloud:
    """What the command uses of ``LocalCloudClient``: its artifacts store."""

    def __init__(self, artifacts: MemoryArtifactStore) -> None:
        self.artifacts = artifacts

    def __call__(self, settings: Any) -> _LocalCloud:
        return self


@pytest.fixture
def artifacts(
    step_context: StepContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MemoryArtifactStore:
    full_run(step_context, tmp_path)
    store = step_context.artifacts
    assert isinstance(store, MemoryArtifactStore)
    running = CloudState.model_construct()
    monkeypatch.setattr(cli_report.control, "status", lambda local: running)
    monkeypatch.setattr(cli_report, "LocalCloudClient", _LocalCloud(store))
    return store


def test_report_writes_to_the_bucket_and_a_local_file(
    artifacts: MemoryArtifactStore, tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "run.html"

    result = CliRunner().invoke(cli_report.report, [RUN_ID, "--out", str(out)])

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
