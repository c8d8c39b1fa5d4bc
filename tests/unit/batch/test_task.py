"""The job entry point: the deployed version is found in serving.json, downloaded,
loaded and used to score files of the landing bucket into the local BigQuery."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import google.cloud.bigquery as bigquery
import pytest
from click.testing import CliRunner

from cascade.batch.scoring import output_tables
from cascade.batch.task import deployed_version, file_source, run_batch
from cascade.cli.batch_predict import batch_predict
from cascade.core.errors import BadRequestError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.serving.state import DeployedVersion, ServingState
from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401
from tests.unit.serving.saved_models import expected_positive, export_tiny_model, upload_model

NOW = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, ArtifactStore]:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    landing = MemoryArtifactStore("cascade-landing")
    uris = {
        version: upload_model(
            artifacts, f"run-{version}", export_tiny_model(tmp_path / f"m{version}", weight=weight)
        )
        for version, weight in (("1", 1.0), ("2", 5.0))
    }
    state = ServingState(
        dataset="churn",
        target="local",
        endpoint="churn",
        updated_at=NOW,
        versions=[
            DeployedVersion(
                version=version,
                run_id=f"run-{version}",
                model_uri=uri,
                state="serving",
                deployed_at=NOW,
            )
            for version, uri in uris.items()
        ],
        traffic={"1": 10, "2": 90},
    )
    artifacts.write_json(DatasetPaths("churn").serving, state)
    return {"cascade-artifacts": artifacts, "cascade-landing": landing}


def test_the_primary_version_scores_landing_files_into_bigquery(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    bigquery_client: bigquery.Client,  # noqa: F811
    stores: dict[str, ArtifactStore],
) -> None:
    stores["cascade-landing"].write(
        "batch/in.jsonl", b'{"key": "a", "age": 30, "city": "lyon"}\n{"key": "b", "age": 1}\n'
    )
    settings = bigquery_local.runtime_settings()
    bigquery_client.create_dataset(settings.warehouse_dataset("predictions"), exists_ok=True)
    result = run_batch(
        settings,
        dataset="churn",
        files=["gs://cascade-landing/batch/"],
        store_for_bucket=stores.__getitem__,
    )
    assert result.manifest.model_version == "2"  # 90% of the traffic
    predictions, errors = output_tables(settings.project, "churn", "2")
    found = list(bigquery_client.query(f"SELECT key, prediction FROM `{predictions}`").result())
    assert [row["key"] for row in found] == ["a"]
    prediction = found[0]["prediction"]
    prediction = prediction if isinstance(prediction, dict) else json.loads(prediction)
    assert prediction["probabilities"][1] == pytest.approx(
        expected_positive(30, "lyon", 5.0), rel=1e-5
    )
    refused = list(bigquery_client.query(f"SELECT key, field FROM `{errors}`").result())
    assert [(row["key"], row["field"]) for row in refused] == [("b", "city")]


def test_a_version_is_chosen_by_number_and_unknown_ones_are_refused(
    stores: dict[str, ArtifactStore],
) -> None:
    artifacts = stores["cascade-artifacts"]
    assert deployed_version(artifacts, "churn", "1").version == "1"
    with pytest.raises(BadRequestError, match="no version '7'"):
        deployed_version(artifacts, "churn", "7")
    with pytest.raises(BadRequestError, match="ever deployed"):
        deployed_version(artifacts, "other", None)


def test_files_outside_the_landing_and_artifacts_buckets_are_refused(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    stores: dict[str, ArtifactStore],
) -> None:
    settings = bigquery_local.runtime_settings()
    with pytest.raises(BadRequestError, match="neither the landing nor the artifacts"):
        file_source(settings, stores.__getitem__, ["gs://someone-else/x.jsonl"])
    with pytest.raises(BadRequestError, match="one bucket"):
        file_source(
            settings,
            stores.__getitem__,
            ["gs://cascade-landing/x.jsonl", "gs://cascade-artifacts/y.jsonl"],
        )


def test_the_cli_needs_exactly_one_source() -> None:
    runner = CliRunner()
    assert runner.invoke(batch_predict, ["churn"]).exit_code == 2
    both = runner.invoke(batch_predict, ["churn", "--table", "p.d.t", "--files", "gs://b/x.csv"])
    assert both.exit_code == 2
    assert "either --table or --files" in both.output
