"""Canary smoke instances: built from the model's signature, valid under the request rules
and answered by the real model server (issue 12, finding 1)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from werkzeug.test import Client

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.job_spec import TrainingJobSpec
from cascade.deploy.smoke import (
    fit_to_signature,
    inputs_from_manifest,
    inputs_from_metadata,
    key_from_metadata,
    read_transform_spec,
    smoke_instances,
)
from cascade.serving import request_rules
from cascade.transform.spec import (
    LabelSpec,
    NumericTransform,
    SplitSpec,
    TransformSpec,
    VocabularyTransform,
)
from tests.unit.serving.saved_models import export_tiny_model, serving_one_version

NOW = datetime(2026, 11, 27, tzinfo=UTC)
SIGNATURE = {"age": "DT_FLOAT", "city": "DT_STRING", "key": "DT_STRING"}


def spec(passthrough_key: str | None = None) -> TransformSpec:
    return TransformSpec(
        dataset="credit",
        run_id="credit-aaa",
        label=LabelSpec(name="defaulted", problem_type="binary", classes=["no", "yes"]),
        features=[
            NumericTransform(name="age", mean=41.5, std=9.0, fill_value=41.5),
            VocabularyTransform(name="city", vocabulary=["paris", "lyon"]),
        ],
        passthrough_key=passthrough_key,
        split=SplitSpec(),
        snapshot=[],
        train_files=[],
        eval_files=[],
        train_rows=0,
        eval_rows=0,
        created_at=NOW,
    )


def test_smoke_rows_have_the_key_no_nulls_and_missing_values_the_model_reads() -> None:
    rows = smoke_instances(spec())

    assert [set(row) for row in rows] == [{"age", "city", "key"}] * 4
    assert rows[0] == {"age": 41.5, "city": "paris", "key": "cascade-smoke-0"}
    assert math.isnan(rows[1]["age"])
    assert rows[1]["city"] == ""
    assert len({row["key"] for row in rows}) == 4
    assert all(value is not None for row in rows for value in row.values())
    request_rules.columns(rows, SIGNATURE)  # TF Serving's rules accept every row


def test_a_named_passthrough_key_is_the_key_input() -> None:
    rows = smoke_instances(spec("customer_id"))

    assert {"age", "city", "customer_id"} == set(rows[0])


def test_rows_are_fitted_to_the_served_signature_ints_as_ints() -> None:
    inputs = {"age": "DT_FLOAT", "count": "DT_INT64", "city": "DT_STRING", "key": "DT_STRING"}

    rows = fit_to_signature([{"age": 30.0, "count": 2.0, "extra": 1}], inputs, "key")

    assert rows == [{"age": 30.0, "count": 2, "city": "", "key": "cascade-smoke-0"}]
    assert type(rows[0]["count"]) is int
    assert fit_to_signature([], inputs, "key")[0]["key"] == "cascade-smoke-0"


def test_signatures_from_the_metadata_route_and_the_exported_manifest() -> None:
    manifest = {"inputs": {"age": "float32", "city": "string"}, "key": "key"}
    tensor = {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]}}
    metadata = {
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {
                            "age": {**tensor, "dtype": "DT_FLOAT"},
                            "city": tensor,
                            "key": tensor,
                        },
                        "outputs": {"key": tensor, "classes": tensor},
                    }
                }
            }
        }
    }

    assert inputs_from_manifest(manifest) == SIGNATURE
    assert inputs_from_metadata(metadata) == SIGNATURE
    assert key_from_metadata(metadata) == "key"


@pytest.fixture(scope="module")
def server_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("smoke")
    with serving_one_version(export_tiny_model(root / "v1"), "credit", root) as client:
        yield client


@pytest.mark.parametrize("index", range(4))
def test_every_smoke_row_is_answered_by_the_model_server(server_client: Client, index: int) -> None:
    metadata = server_client.get("/v1/models/credit/versions/1/metadata").get_json()
    rows = smoke_instances(
        spec(), inputs=inputs_from_metadata(metadata), key=key_from_metadata(metadata)
    )
    body: Any = json.dumps({"instances": [rows[index]]})

    response = server_client.post("/v1/models/credit/versions/1:predict", data=body)

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["predictions"][0]["key"] == f"cascade-smoke-{index}"


@pytest.mark.parametrize("index", range(4))
def test_the_steps_spec_built_rows_are_answered_as_they_are(
    server_client: Client, index: int
) -> None:
    """What the deploy step builds (from the spec alone) already fits the export."""
    body = json.dumps({"instances": [smoke_instances(spec())[index]]})

    response = server_client.post("/v1/models/credit:predict", data=body)

    assert response.status_code == 200, response.get_json()


def _job_spec(run_id: str, transform_uri: str) -> TrainingJobSpec:
    return TrainingJobSpec(
        run_id=run_id,
        dataset="credit",
        display_name=run_id,
        transform_spec_uri=transform_uri,
        output_dir=f"gs://art/runs/{run_id}/training",
    )


def test_a_run_without_a_transform_reads_the_spec_its_training_job_used() -> None:
    """A follow-up or retrain request's run trained on another run's transform: its
    canary rows and its monitoring rows are built from that one."""
    artifacts = MemoryArtifactStore("art")
    artifacts.write_json("runs/credit-aaa/transform/transform.json", spec("customer_id"))
    artifacts.write_json(
        "runs/credit-rfollow/training/job_spec.json",
        _job_spec("credit-rfollow", "gs://art/runs/credit-aaa/transform/transform.json"),
    )

    found = read_transform_spec(artifacts, "credit-rfollow")

    assert found is not None
    assert found.passthrough_key == "customer_id"


def test_an_upload_run_that_trained_on_a_later_transform_reads_that_one() -> None:
    artifacts = MemoryArtifactStore("art")
    artifacts.write_json("runs/credit-aaa/transform/transform.json", spec(None))
    artifacts.write_json("runs/credit-bbb/transform/transform.json", spec("customer_id"))
    artifacts.write_json(
        "runs/credit-aaa/training/job_spec.json",
        _job_spec("credit-aaa", "gs://art/runs/credit-bbb/transform/transform.json"),
    )

    found = read_transform_spec(artifacts, "credit-aaa")

    assert found is not None
    assert found.passthrough_key == "customer_id"
    assert read_transform_spec(artifacts, "credit-zzz") is None
