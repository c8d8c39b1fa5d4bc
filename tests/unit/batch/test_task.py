"""The job entry point: the deployed version is found in serving.json, downloaded,
loaded and used to score files of the landing bucket into the local BigQuery; a hybrid
dataset with a head scores only the rows of its most requested keys."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import google.cloud.bigquery as bigquery
import pytest
from click.testing import CliRunner

from cascade.batch.head import request_log_table
from cascade.batch.scoring import output_tables
from cascade.batch.task import deployed_version, file_source, run_batch
from cascade.cli.batch_predict import batch_predict
from cascade.core.errors import BadRequestError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.store import ArtifactStore
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.serving.request_log import ensure_request_log_table, request_log_row
from cascade.serving.state import DeployedVersion, ServingState, read_serving_state
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


# A hybrid dataset's head ---------------------------------------------------------------


class RecordingSink:
    """The precomputed store as a batch writes to it."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def write(self, dataset: str, version: str, rows: Iterable[tuple[str, dict[str, Any]]]) -> int:
        written = [key for key, _ in rows]
        self.keys += written
        return len(written)


def hybrid_dataset(stores: dict[str, ArtifactStore], dataset: str, keys: int) -> list[str]:
    """``dataset`` served hybrid by churn's versions, its head the top ``keys`` keys, its
    batch source the landing files ``<dataset>/in.jsonl`` (customers a to e)."""
    artifacts = stores["cascade-artifacts"]
    found = read_serving_state(artifacts, "churn")
    assert found is not None
    state = found[0].model_copy(update={"dataset": dataset, "endpoint": dataset, "mode": "hybrid"})
    artifacts.write_json(DatasetPaths(dataset).serving, state)
    files = [f"gs://cascade-landing/{dataset}/"]
    config = {
        "serving": {"mode": "hybrid", "batch_source": {"files": files}, "head": {"keys": keys}}
    }
    push_pipeline_config(artifacts, dataset, json.dumps(config).encode(), where="pipeline.yaml")
    lines = [
        json.dumps({"key": key, "age": 30 + n, "city": "lyon"}) for n, key in enumerate("abcde")
    ]
    stores["cascade-landing"].write(f"{dataset}/in.jsonl", "\n".join(lines).encode())
    return files


def log_requests(client: bigquery.Client, settings: Any, endpoint: str, *keys: str) -> None:
    """One logged request per key, an hour before NOW, as the model server logs them."""
    table = request_log_table(settings)
    ensure_request_log_table(client, table)
    rows = [
        request_log_row(
            endpoint=endpoint,
            deployed_model_id="2",
            request_id=number,
            keys=[key],
            logged_at=NOW - timedelta(hours=1),
        )
        for number, key in enumerate(keys)
    ]
    assert client.insert_rows_json(table, rows) == []


def scored_keys(client: bigquery.Client, settings: Any, dataset: str, batch_id: str) -> list[str]:
    predictions, _ = output_tables(settings.project, dataset, "2")
    rows = client.query(
        f"SELECT key FROM `{predictions}` WHERE batch_id = @batch ORDER BY key",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("batch", "STRING", batch_id)]
        ),
    ).result()
    return [row["key"] for row in rows]


def test_a_hybrid_batch_scores_only_its_heads_keys_and_a_new_head_is_a_new_batch(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    bigquery_client: bigquery.Client,  # noqa: F811
    stores: dict[str, ArtifactStore],
) -> None:
    settings = bigquery_local.runtime_settings()
    bigquery_client.create_dataset(settings.warehouse_dataset("predictions"), exists_ok=True)
    files = hybrid_dataset(stores, "heady", keys=2)
    log_requests(bigquery_client, settings, "heady", "b", "b", "b", "d", "d", "a", "aa", "aa")
    log_requests(bigquery_client, settings, "someone-else", "c", "c", "c", "c")

    def batch(sink: RecordingSink) -> Any:
        return run_batch(
            settings,
            dataset="heady",
            files=files,
            sink=sink,
            store_for_bucket=stores.__getitem__,
            now=lambda: NOW,
        )

    first_sink = RecordingSink()
    first = batch(first_sink)
    assert not first.skipped
    manifest = first.manifest
    # The head is b (3) and aa (2) over d (2: ties by key); aa is no row of the source.
    assert (manifest.rows_read, manifest.rows_scored, manifest.rows_failed) == (1, 1, 0)
    assert scored_keys(bigquery_client, settings, "heady", manifest.batch_id) == ["b"]
    assert first_sink.keys == ["b"]  # only the head reaches the precomputed store
    assert "|head:2:" in manifest.source_identity
    assert batch(RecordingSink()).skipped  # the same head: the same batch, already done

    log_requests(bigquery_client, settings, "heady", "e", "e", "e", "e", "e")
    second_sink = RecordingSink()
    second = batch(second_sink)  # the head is now e (5) and b (3): a new batch
    assert not second.skipped
    assert second.manifest.batch_id != manifest.batch_id
    assert scored_keys(bigquery_client, settings, "heady", second.manifest.batch_id) == ["b", "e"]
    assert sorted(second_sink.keys) == ["b", "e"]


def test_a_hybrid_batch_without_traffic_scores_the_whole_source(
    bigquery_local: LocalCloudSettings,  # noqa: F811
    bigquery_client: bigquery.Client,  # noqa: F811
    stores: dict[str, ArtifactStore],
) -> None:
    settings = bigquery_local.runtime_settings()
    bigquery_client.create_dataset(settings.warehouse_dataset("predictions"), exists_ok=True)
    files = hybrid_dataset(stores, "fresh", keys=2)
    sink = RecordingSink()
    result = run_batch(
        settings,
        dataset="fresh",
        files=files,
        sink=sink,
        store_for_bucket=stores.__getitem__,
        now=lambda: NOW,
    )
    assert result.manifest.rows_scored == 5
    assert sorted(sink.keys) == ["a", "b", "c", "d", "e"]
    assert "|head:" not in result.manifest.source_identity
