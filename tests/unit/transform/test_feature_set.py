"""The transform's features are the schema's active features, whatever the baseline or
the last file holds: a 5,000-column file changes neither the baseline nor the transform."""

from __future__ import annotations

import pytest

from cascade.core.context import StepContext
from cascade.core.errors import InvalidConfigError
from cascade.core.training_config import TransformConfig
from cascade.core.validation_config import ValidationConfig
from cascade.steps.transform import handle_data_validated
from cascade.transform.catalog import latest_transform, read_transform
from cascade.transform.spec import TransformSpec
from cascade.transform.spec_fitting import fit_transform
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.schema import infer_schema
from cascade.validation.schema_store import accept_feature
from cascade.validation.statistics import statistics_proto
from cascade.validation.summaries import DatasetSummary
from cascade.validation.tfmd import schema_pb2
from tests.unit.conftest import Clock
from tests.unit.validation.builders import summary_of
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.feature_files import (
    BASE_COLUMNS,
    DATASET,
    baseline,
    csv_file,
    last_validated,
    new_columns,
    run_statistics,
    validate,
    write_pipeline_config,
)
from tests.unit.validation.step_context import validate_step_context

PIPELINE = "label: label\nproblem_type: binary\n"


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _statistics() -> DatasetSummary:
    return summary_of(
        {
            "income": [10.0, 20.0, 30.0, 40.0],
            "region": ["north", "south", "north", "east"],
            "legacy": [1.0, 2.0, 3.0, 4.0],
            "customer_id": ["c1", "c2", "c3", "c4"],
            "defaulted": [0, 1, 0, 1],
            "stray": [5.0, 6.0, 7.0, 8.0],
        }
    )


def _schema_without_stray() -> object:
    summary = _statistics()
    del summary.features["stray"]
    schema = infer_schema(summary, ValidationConfig())
    for feature in schema.feature:
        if feature.name == "legacy":
            feature.deprecated = True
        if feature.name == "customer_id":
            feature.lifecycle_stage = schema_pb2.DISABLED
    return schema


def test_only_the_schemas_active_features_are_fitted_and_disabled_ones_are_listed_as_skipped() -> (
    None
):
    fitted = fit_transform(
        _statistics(),
        dataset=DATASET,
        label="defaulted",
        problem_type="binary",
        config=TransformConfig(key_column="customer_id"),
        schema=_schema_without_stray(),
    )

    assert [feature.name for feature in fitted.features] == ["income", "region"]
    assert fitted.skipped == {"legacy": "deprecated in the schema"}
    assert fitted.passthrough_key == "customer_id"  # a disabled feature can still be the key


def test_without_a_schema_every_column_of_the_statistics_is_fitted() -> None:
    fitted = fit_transform(
        _statistics(),
        dataset=DATASET,
        label="defaulted",
        problem_type="binary",
        config=TransformConfig(),
        schema=None,
    )

    assert [feature.name for feature in fitted.features] == [
        "customer_id",
        "income",
        "legacy",
        "region",
        "stray",
    ]


def test_a_label_outside_the_schema_is_an_error_that_points_at_accept_feature() -> None:
    with pytest.raises(InvalidConfigError, match=r"label names 'stray'.*accept-feature"):
        fit_transform(
            _statistics(),
            dataset=DATASET,
            label="stray",
            problem_type="regression",
            config=TransformConfig(),
            schema=_schema_without_stray(),
        )


def _transform(ctx: StepContext) -> TransformSpec:
    message = last_validated(ctx)
    outcome = handle_data_validated(ctx, message, event_id=f"transform-{message.run_id}")
    assert outcome is not None
    assert outcome.state == "succeeded", outcome.summary
    spec = read_transform(ctx.artifacts, message.run_id)
    assert spec is not None
    return spec


def _baseline_bytes(ctx: StepContext) -> bytes:
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    return statistics_proto(stored.summary, ValidationConfig(), name="b").SerializeToString()


def test_a_5000_column_file_is_quarantined_and_changes_neither_baseline_nor_transform(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    write_pipeline_config(ctx, PIPELINE)
    validate(ctx, storage, "day-1.csv", csv_file(1))
    validate(ctx, storage, "day-2.csv", csv_file(2))
    before = _transform(ctx)
    baseline_before = _baseline_bytes(ctx)
    wide = csv_file(3, rows=60, columns=[*BASE_COLUMNS, *new_columns(4998)])

    outcome, run_id = validate(ctx, storage, "wide.csv", wide)

    assert outcome.state == "rejected"
    assert "5000 columns" in outcome.summary
    assert "validation.max_features = 1000" in outcome.summary
    assert "gs://cascade-landing/credit/wide.csv" in outcome.summary
    assert outcome.outputs["quarantine"].endswith(f"quarantine/{DATASET}/{run_id}")
    assert _baseline_bytes(ctx) == baseline_before
    pointer = latest_transform(ctx.artifacts, DATASET)
    assert pointer is not None
    assert pointer.run_id == before.run_id
    validate(ctx, storage, "day-4.csv", csv_file(4))
    after = _transform(ctx)
    assert after.feature_names == before.feature_names == ["amount"]


def test_with_max_features_raised_a_5000_column_file_is_accepted_but_its_columns_stay_out(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    write_pipeline_config(ctx, PIPELINE + "validation:\n  max_features: 10000\n")
    validate(ctx, storage, "day-1.csv", csv_file(1))
    validate(ctx, storage, "day-2.csv", csv_file(2))
    before = _transform(ctx)
    wide = csv_file(3, rows=60, columns=[*BASE_COLUMNS, *new_columns(4998)])

    outcome, run_id = validate(ctx, storage, "wide.csv", wide)

    assert outcome.state == "succeeded"
    new_column_warnings = [w for w in outcome.outputs["warnings"] if "New column" in w]
    assert len(new_column_warnings) == 4998
    assert len(run_statistics(ctx, run_id).features) == 5000  # recorded with its run
    merged = baseline(ctx)
    assert set(merged.features) == set(BASE_COLUMNS)
    assert merged.num_examples == 660
    after = _transform(ctx)
    assert after.feature_names == before.feature_names == ["amount"]
    assert any(f.uri.endswith("/wide.csv") for f in after.snapshot)  # its rows are trained on


def test_after_accept_feature_the_next_transform_fits_the_new_column(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    write_pipeline_config(ctx, PIPELINE)
    validate(ctx, storage, "day-1.csv", csv_file(1))
    validate(ctx, storage, "day-2.csv", csv_file(2, columns=[*BASE_COLUMNS, "score"]))
    assert _transform(ctx).feature_names == ["amount"]

    accept_feature(
        ctx.artifacts,
        DATASET,
        "score",
        reason="joined the export",
        actor="ana",
        now=clock(),
        config=ValidationConfig(),
    )
    validate(ctx, storage, "day-3.csv", csv_file(3, columns=[*BASE_COLUMNS, "score"]))

    spec = _transform(ctx)
    assert spec.feature_names == ["amount", "score"]
    score = next(feature for feature in spec.features if feature.name == "score")
    assert score.kind == "numeric"
