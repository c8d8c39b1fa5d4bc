"""The run report's freshness stamp against fake-gcs-server (the local cloud's Cloud
Storage): written as custom metadata, read back by ``objects.get``, so a repeated
announcement of an unchanged run writes no new generation, and a changed run is rendered
again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.cloud import storage

from cascade.core.paths import RunPaths
from cascade.core.runs import RunLedger, RunRecord, Trigger
from cascade.core.store import ArtifactStore
from cascade.report import RENDERED_FROM_KEY, refresh_run_report, run_fingerprint
from tests.integration.fake_gcs import gcs_fixture  # noqa: F401 - the `gcs` fixture

pytestmark = pytest.mark.integration

RUN_ID = "credit-0123456789abcdef"
NOW = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)


def test_a_report_is_rendered_once_per_state_of_its_run(
    gcs: tuple[str, storage.Client],
) -> None:
    _, client = gcs
    artifacts = ArtifactStore(client, "artifacts")
    ledger = RunLedger(artifacts)
    ledger.ensure(
        RunRecord(
            run_id=RUN_ID,
            dataset="credit",
            trigger=Trigger(kind="object", uri="gs://landing/credit/a.csv", generation=1),
            created_at=NOW,
            updated_at=NOW,
        )
    )
    report = RunPaths(RUN_ID).report

    assert refresh_run_report(artifacts, RUN_ID) == f"gs://artifacts/{report}"
    first = artifacts.stat(report)
    assert first is not None
    assert first.metadata == {RENDERED_FROM_KEY: run_fingerprint(artifacts, RUN_ID)}

    assert refresh_run_report(artifacts, RUN_ID) is None
    unchanged = artifacts.stat(report)
    assert unchanged is not None
    assert unchanged.generation == first.generation

    ledger.update(RUN_ID, lambda run: setattr(run, "state", "failed"))
    assert refresh_run_report(artifacts, RUN_ID) is not None
    again = artifacts.stat(report)
    assert again is not None
    assert again.generation != first.generation
    assert again.metadata[RENDERED_FROM_KEY] != first.metadata[RENDERED_FROM_KEY]
