"""The baseline is the schema's: new columns stay findings, absurdly wide files are
refused from their header, and `schema accept-feature` takes a column in."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cascade.cli import schema_commands
from cascade.cli.main import cli
from cascade.core.context import StepContext
from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.validation_config import Check, Severity, ValidationConfig
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.feature_count import header_column_count
from cascade.validation.schema import infer_schema, parse_schema_text, schema_to_text
from cascade.validation.schema_store import accept_feature, read_schema
from cascade.validation.tfmd import schema_pb2
from cascade.validation.validator import validate_file
from tests.unit.conftest import Clock
from tests.unit.validation.builders import csv_source, summary_of
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.feature_files import (
    BASE_COLUMNS,
    DATASET,
    baseline,
    csv_file,
    run_statistics,
    validate,
)
from tests.unit.validation.step_context import validate_step_context

WITH_SCORE = (*BASE_COLUMNS, "score")


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _accept_score(ctx: StepContext, clock: Clock, **options: str) -> None:
    accept_feature(
        ctx.artifacts,
        DATASET,
        "score",
        reason="the bureau score joined the export",
        actor="ana@laptop",
        now=clock(),
        config=ValidationConfig(),
        **options,
    )


# -- new columns never enter the baseline -----------------------------------------------


def test_a_new_column_is_a_warning_kept_in_the_files_statistics_but_not_in_the_baseline(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    validate(ctx, storage, "day-1.csv", csv_file(1))

    outcome, run_id = validate(ctx, storage, "day-2.csv", csv_file(2, columns=WITH_SCORE))

    assert outcome.state == "succeeded"
    assert any(
        "'score'" in warning and "New column" in warning for warning in outcome.outputs["warnings"]
    )
    assert "score" in run_statistics(ctx, run_id).features  # recorded with the run
    merged = baseline(ctx)
    assert set(merged.features) == set(BASE_COLUMNS)
    assert merged.num_examples == 600


def test_a_merge_sheds_columns_the_schema_does_not_list_but_keeps_deprecated_ones() -> None:
    config = ValidationConfig()
    now = [1000.0]
    store = BaselineStore(MemoryArtifactStore("cascade-artifacts"), DATASET, clock=lambda: now[0])
    first = summary_of({"x": [1, 2], "old": [3, 4], "junk": [5, 6]})
    first_schema = infer_schema(first, config)
    store.merge_file("file-1", first, config, schema=first_schema)
    store.compact(config, schema=first_schema, is_accepted=lambda _id: True)  # an old baseline
    schema = infer_schema(summary_of({"x": [1], "old": [1]}), config)
    schema.feature[1].lifecycle_stage = schema_pb2.DEPRECATED
    store.merge_file(
        "file-2", summary_of({"x": [7], "old": [8], "junk": [9]}), config, schema=schema
    )

    read = store.load(schema, config)  # what validation and the transform read
    now[0] += 5
    store.compact(config, schema=schema, is_accepted=lambda _id: True)
    compacted = store.load()

    for merged in (read, compacted):
        assert merged is not None
        assert set(merged.summary.features) == {"x", "old"}
        assert merged.summary.features["old"].presence.num_non_missing == 3
        assert merged.summary.num_examples == 3


# -- max_features -----------------------------------------------------------------------


def _wide_file(tmp_path: Path, suffix: str, columns: int) -> tuple[str, bytes]:
    names = [f"c{index}" for index in range(columns)]
    rows = [{name: index for index, name in enumerate(names)} for _ in range(3)]
    if suffix == ".parquet":
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        return "wide.parquet", sink.getvalue()
    if suffix == ".jsonl":
        return "wide.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode()
    text = ",".join(names) + "\n" + "".join(",".join("1" for _ in names) + "\n" for _ in rows)
    if suffix == ".csv.gz":
        return "wide.csv.gz", gzip.compress(text.encode())
    return "wide.csv", text.encode()


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".jsonl"])
def test_a_file_wider_than_max_features_is_refused_from_its_header_before_any_statistics(
    tmp_path: Path, suffix: str
) -> None:
    name, data = _wide_file(tmp_path, suffix, columns=12)
    source = csv_source(tmp_path, data, name)

    validation = validate_file(
        source, schema=None, baseline=None, config=ValidationConfig(max_features=10)
    )

    assert not validation.accepted
    [error] = validation.result.errors
    assert error.check is Check.FEATURE_COUNT
    assert source.uri in error.description
    assert "12 columns" in error.description
    assert "validation.max_features = 10" in error.description
    assert validation.summary.features == {}  # no statistics were computed
    assert validation.result.anomalies.dataset_anomaly_info.short_description == "Too many columns"


def test_as_a_warning_the_exact_column_count_is_noted_and_the_file_accepted(
    tmp_path: Path,
) -> None:
    name, data = _wide_file(tmp_path, ".csv", columns=12)
    config = ValidationConfig.model_validate(
        {"max_features": 10, "severities": {"feature_count": "warning"}}
    )

    validation = validate_file(
        csv_source(tmp_path, data, name), schema=None, baseline=None, config=config
    )

    assert validation.accepted
    [warning] = [f for f in validation.result.warnings if f.check is Check.FEATURE_COUNT]
    assert "12 columns" in warning.description
    assert "counted from its header" not in warning.description
    assert len(validation.summary.features) == 12


def test_a_json_lines_file_that_widens_after_its_first_record_is_caught_by_the_exact_count(
    tmp_path: Path,
) -> None:
    records = [{"a": 1, "b": 2}, {f"c{index}": index for index in range(12)}]
    text = "".join(json.dumps(record) + "\n" for record in records)
    source = csv_source(tmp_path, text, "growing.jsonl")
    assert header_column_count(source, ValidationConfig()) == 2

    validation = validate_file(
        source, schema=None, baseline=None, config=ValidationConfig(max_features=10)
    )

    assert [f.check for f in validation.result.errors] == [Check.FEATURE_COUNT]
    assert "14 columns" in validation.result.errors[0].description


def test_a_header_that_cannot_be_read_is_left_to_the_full_read_which_names_the_problem(
    tmp_path: Path,
) -> None:
    source = csv_source(tmp_path, b"not parquet at all", "broken.parquet")

    assert header_column_count(source, ValidationConfig()) is None
    with pytest.raises(BadInputError, match="not a valid Parquet file"):
        validate_file(source, schema=None, baseline=None, config=ValidationConfig(max_features=1))


def test_max_features_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_features"):
        ValidationConfig(max_features=0)


# -- accept-feature -----------------------------------------------------------------------


def test_accept_feature_appends_the_feature_inferred_where_it_was_seen_keeping_user_edits(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    validate(ctx, storage, "day-1.csv", csv_file(1))
    edited = "# checked by the risk team\n" + _schema_text(ctx)
    ctx.artifacts.write(DatasetPaths(DATASET).schema, edited.encode(), content_type="text/plain")
    _, run_id = validate(ctx, storage, "day-2.csv", csv_file(2, columns=WITH_SCORE))

    accepted = accept_feature(
        ctx.artifacts,
        DATASET,
        "score",
        reason="the bureau score\njoined the export",
        actor="ana@laptop",
        now=clock(),
        config=ValidationConfig(),
    )

    assert accepted.added
    assert accepted.statistics_from == f"run {run_id}"
    stored = read_schema(ctx.artifacts, DATASET)
    assert stored is not None
    assert accepted.schema_uri == stored.versioned_uri
    assert stored.text.startswith(edited)  # the user's text, comments included, untouched
    assert "ana@laptop" in stored.text
    assert "the bureau score joined the export" in stored.text
    score = next(feature for feature in stored.schema.feature if feature.name == "score")
    assert score.type == schema_pb2.FLOAT
    assert score.presence.min_fraction == pytest.approx(0.95)
    assert score.drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.1)


def test_after_accept_feature_the_next_accepted_files_statistics_of_it_enter_the_baseline(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    validate(ctx, storage, "day-1.csv", csv_file(1))
    validate(ctx, storage, "day-2.csv", csv_file(2, columns=WITH_SCORE))
    _accept_score(ctx, clock)

    outcome, _ = validate(ctx, storage, "day-3.csv", csv_file(3, rows=200, columns=WITH_SCORE))

    assert outcome.state == "succeeded"
    assert not any("'score'" in warning for warning in outcome.outputs["warnings"])
    merged = baseline(ctx)
    assert set(merged.features) == {*BASE_COLUMNS, "score"}
    assert merged.features["score"].presence.num_non_missing == 200
    assert merged.num_examples == 800


def test_accept_feature_takes_a_quarantined_files_column_from_its_run(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    validate(ctx, storage, "day-1.csv", csv_file(1))
    outcome, run_id = validate(ctx, storage, "day-2.csv", csv_file(2, columns=("label", "score")))
    assert outcome.state == "rejected"  # amount is missing

    _accept_score(ctx, clock, run_id=run_id)

    stored = read_schema(ctx.artifacts, DATASET)
    assert stored is not None
    assert "score" in {feature.name for feature in stored.schema.feature}
    assert f"statistics of run {run_id}" in stored.text


def test_accept_feature_redoes_its_change_on_a_schema_edited_meanwhile(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    validate(ctx, storage, "day-1.csv", csv_file(1))
    validate(ctx, storage, "day-2.csv", csv_file(2, columns=WITH_SCORE))
    artifacts = ctx.artifacts
    schema_name = DatasetPaths(DATASET).schema
    original_read = artifacts.read
    edits: list[int | None] = []

    def read_then_lose_a_race(name: str, **options: object) -> object:
        current = original_read(name, **options)  # type: ignore[arg-type]
        if name == schema_name and not edits:
            text = "# the user's edit\n" + (current.data.decode() if current else "")
            edits.append(artifacts.write(schema_name, text.encode()))
        return current

    artifacts.read = read_then_lose_a_race  # type: ignore[method-assign,assignment]
    _accept_score(ctx, clock)
    artifacts.read = original_read  # type: ignore[method-assign]

    stored = read_schema(ctx.artifacts, DATASET)
    assert stored is not None
    assert edits
    assert edits[0] is not None  # the concurrent edit was written
    assert stored.text.startswith("# the user's edit\n")
    assert [f.name for f in stored.schema.feature].count("score") == 1


def test_accept_feature_on_an_active_feature_changes_nothing(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    validate(ctx, storage, "day-1.csv", csv_file(1))
    before = read_schema(ctx.artifacts, DATASET)

    accepted = accept_feature(
        ctx.artifacts,
        DATASET,
        "amount",
        reason="why not",
        actor="ana",
        now=clock(),
        config=ValidationConfig(),
    )

    assert not accepted.added
    assert before is not None
    assert accepted.schema_uri == before.versioned_uri


@pytest.mark.parametrize(
    ("prepare", "feature", "reason", "message"),
    [
        ("two files", "nowhere", "seen?", "no accepted file has a column 'nowhere'"),
        ("two files", "score", "  ", "needs a reason"),
        ("deprecated score", "score", "back", "'score' is listed but deprecated in the schema"),
        ("nothing", "score", "early", "no accepted file has a column"),
    ],
)
def test_accept_feature_refuses_what_it_cannot_take_and_says_why(
    ctx: StepContext,
    storage: FakeStorageClient,
    clock: Clock,
    prepare: str,
    feature: str,
    reason: str,
    message: str,
) -> None:
    if prepare != "nothing":
        validate(ctx, storage, "day-1.csv", csv_file(1))
        validate(ctx, storage, "day-2.csv", csv_file(2, columns=WITH_SCORE))
    if prepare == "deprecated score":
        _accept_score(ctx, clock)
        schema = parse_schema_text(_schema_text(ctx), where="test")
        next(f for f in schema.feature if f.name == "score").deprecated = True
        ctx.artifacts.write(DatasetPaths(DATASET).schema, schema_to_text(schema).encode())

    with pytest.raises(InvalidConfigError, match=message):
        accept_feature(
            ctx.artifacts,
            DATASET,
            feature,
            reason=reason,
            actor="ana",
            now=clock(),
            config=ValidationConfig(),
        )


def test_the_schema_commands_accept_a_column_and_show_it_active(
    ctx: StepContext, storage: FakeStorageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    validate(ctx, storage, "day-1.csv", csv_file(1))
    validate(ctx, storage, "day-2.csv", csv_file(2, columns=WITH_SCORE))
    monkeypatch.setattr(schema_commands, "_artifacts", lambda from_env: ctx.artifacts)
    runner = CliRunner()

    accepted = runner.invoke(
        cli, ["schema", "accept-feature", DATASET, "score", "--reason", "joined", "--actor", "ana"]
    )
    shown = runner.invoke(cli, ["schema", "show", DATASET, "--text"])
    table = runner.invoke(cli, ["schema", "show", DATASET])
    missing = runner.invoke(
        cli, ["schema", "accept-feature", DATASET, "nowhere", "--reason", "seen?"]
    )

    assert accepted.exit_code == 0, accepted.output
    assert 'name: "score"' in accepted.output
    assert shown.exit_code == 0, shown.output
    assert "ana" in shown.output
    assert 'name: "score"' in shown.output
    assert table.exit_code == 0, table.output
    assert "score" in table.output
    assert "active" in table.output
    assert missing.exit_code == 1
    assert "nowhere" in missing.output


def _schema_text(ctx: StepContext) -> str:
    stored = read_schema(ctx.artifacts, DATASET)
    assert stored is not None, "the first file's schema was not stored"
    return stored.text


def test_severity_of_feature_count_defaults_to_error() -> None:
    assert ValidationConfig().severities.of(Check.FEATURE_COUNT) is Severity.ERROR
    assert ValidationConfig().max_features == 1000
