"""The extract step on in-memory buckets and a fake BigQuery: incremental ranges, no new
rows → no file, once-only landing under redelivery, concurrency and crashes at every
point between the export and the watermark's advance."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import google.cloud.bigquery as bigquery
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cascade.core.bigquery_export import BigQueryExporter
from cascade.core.bigquery_source import BigQuerySource, WatermarkValue
from cascade.core.context import StepContext
from cascade.core.errors import InvalidConfigError, PermanentError, StepInProgressError
from cascade.core.export_landing import CloudExportLanding
from cascade.core.extraction import ExtractionPaths, ExtractionState, ExtractRequest
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.messages import Alert
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.settings import Settings
from cascade.core.topology import load_topology
from cascade.steps.extract import (
    ExtractTools,
    ShardCopier,
    extract_dataset,
    handle_extract_request,
)
from tests.unit.conftest import Clock, memory_step_context

DATASET = "orders"
CONFIG = b"bigquery_source:\n  table: sources.orders\n  watermark: {column: seq, type: INT64}\n"


class CrashError(Exception):
    """The process dying at a chosen point."""


class FakeBigQuery:
    """A table of rows with an INT64 ``seq``; EXPORT DATA writes Parquet shards of at
    most ``shard_rows`` rows into the bucket, as BigQuery does on Google Cloud."""

    def __init__(self, artifacts: MemoryArtifactStore, shard_rows: int = 3) -> None:
        self.rows: list[dict[str, Any]] = []
        self.artifacts = artifacts
        self.shard_rows = shard_rows
        self.exports: list[tuple[int | None, int, str]] = []
        self.after_max: Callable[[], None] = lambda: None
        self.crash_after_export = False

    def insert(self, count: int) -> None:
        start = len(self.rows)
        self.rows += [{"seq": start + n + 1, "amount": float(n)} for n in range(count)]

    def max_watermark(self, dataset: str, source: BigQuerySource) -> WatermarkValue | None:
        high = max((row["seq"] for row in self.rows), default=None)
        self.after_max()
        return high

    def export(
        self,
        dataset: str,
        source: BigQuerySource,
        low: WatermarkValue | None,
        high: WatermarkValue,
        uri_prefix: str,
    ) -> None:
        assert isinstance(high, int)
        assert low is None or isinstance(low, int)
        self.exports.append((low, high, uri_prefix))
        rows = [r for r in self.rows if (low is None or r["seq"] > low) and r["seq"] <= high]
        prefix = uri_prefix.removeprefix(f"gs://{self.artifacts.bucket_name}/")
        for index in range(max(1, -(-len(rows) // self.shard_rows))):
            part = rows[index * self.shard_rows : (index + 1) * self.shard_rows]
            sink = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(part), sink)
            self.artifacts.write(f"{prefix}part-{index:012d}.parquet", sink.getvalue())
        if self.crash_after_export:
            raise CrashError("after the export")


class MemoryCopier(ShardCopier):
    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.created: list[str] = []
        self.crash_after: int | None = None

    def copy_new(self, source_bucket: str, name: str, landing_bucket: str, new_name: str) -> bool:
        landing = self.ctx.landing_store()
        if landing.stat(new_name) is not None:
            return False
        if self.crash_after is not None and len(self.created) >= self.crash_after:
            raise CrashError("while copying")
        stored = self.ctx.artifacts.read(name)
        assert stored is not None
        assert landing.write(new_name, stored.data, if_generation_match=0) is not None
        self.created.append(new_name)
        return True


@pytest.fixture
def ctx(clock: Clock) -> StepContext:
    context = memory_step_context(clock, Settings(function_timeout_s=60, claim_lease_s=60))
    context.landing = MemoryArtifactStore("cascade-landing")
    push_pipeline_config(context.artifacts, DATASET, CONFIG, where="pipeline.yaml")
    return context


@pytest.fixture
def warehouse(ctx: StepContext) -> FakeBigQuery:
    assert isinstance(ctx.artifacts, MemoryArtifactStore)
    return FakeBigQuery(ctx.artifacts)


@pytest.fixture
def copier(ctx: StepContext) -> MemoryCopier:
    return MemoryCopier(ctx)


@pytest.fixture
def tools(warehouse: FakeBigQuery, copier: MemoryCopier) -> ExtractTools:
    return ExtractTools(exporter=warehouse, landing=CloudExportLanding(), copier=copier)


def landed_seqs(ctx: StepContext, extraction_id: str | None = None) -> list[int]:
    """The ``seq`` of every row in the landed shards (of one extraction, or all)."""
    landing = ctx.landing_store()
    prefix = f"{DATASET}/extracts/{extraction_id or ''}"
    seqs: list[int] = []
    for name in landing.list_names(prefix):
        stored = landing.read(name)
        assert stored is not None
        seqs += pq.read_table(io.BytesIO(stored.data)).column("seq").to_pylist()
    return sorted(seqs)


def state(ctx: StepContext) -> ExtractionState:
    found = ctx.artifacts.read_model(ExtractionPaths(DATASET).state, ExtractionState)
    assert found is not None
    return found[0]


def event(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    attributes = {
        "specversion": "1.0",
        "id": "7",
        "source": "//pubsub.googleapis.com/projects/p/topics/cascade-extract-requests",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
    }
    data = {"message": {"data": base64.b64encode(json.dumps(body).encode()).decode()}}
    return attributes, data


# ---------------------------------------------------------------- increments


def test_two_increments_make_two_extractions_the_second_holding_only_new_rows(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools
) -> None:
    warehouse.insert(7)
    first = extract_dataset(ctx, DATASET, tools)
    warehouse.insert(4)
    second = extract_dataset(ctx, DATASET, tools)

    assert (first.outcome, first.low, first.high) == ("extracted", None, 7)
    assert (second.outcome, second.low, second.high) == ("extracted", 7, 11)
    assert landed_seqs(ctx, first.extraction_id) == [1, 2, 3, 4, 5, 6, 7]
    assert landed_seqs(ctx, second.extraction_id) == [8, 9, 10, 11]
    assert len(first.landed) == 3  # shards of at most 3 rows, each its own landed file
    assert all(name.startswith(f"{DATASET}/extracts/") for name in first.landed + second.landed)
    assert (state(ctx).sequence, state(ctx).watermark) == (2, 11)
    assert [(low, high) for low, high, _ in warehouse.exports] == [(None, 7), (7, 11)]


def test_no_new_rows_means_no_export_no_file_and_no_state_write(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools
) -> None:
    empty = extract_dataset(ctx, DATASET, tools)
    warehouse.insert(2)
    extract_dataset(ctx, DATASET, tools)
    written = ctx.artifacts.stat(ExtractionPaths(DATASET).state)

    again = extract_dataset(ctx, DATASET, tools)

    assert empty.outcome == again.outcome == "no-new-rows"
    assert len(warehouse.exports) == 1
    assert ctx.artifacts.stat(ExtractionPaths(DATASET).state) == written
    assert landed_seqs(ctx) == [1, 2]


def test_a_redelivered_request_extracts_nothing_twice(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools, copier: MemoryCopier
) -> None:
    warehouse.insert(5)
    body = {"dataset": DATASET, "request_id": "r1"}

    handle_extract_request(ctx, *event(body), tools=tools)
    copied = list(copier.created)
    report = handle_extract_request(ctx, *event(body), tools=tools)

    assert [item.outcome for item in report.extractions] == ["no-new-rows"]
    assert copier.created == copied
    assert landed_seqs(ctx) == [1, 2, 3, 4, 5]


def test_rows_arriving_during_an_extraction_go_to_the_next_one(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools
) -> None:
    warehouse.insert(3)
    warehouse.after_max = lambda: warehouse.insert(2)  # inserted after MAX, before EXPORT

    first = extract_dataset(ctx, DATASET, tools)
    warehouse.after_max = lambda: None
    second = extract_dataset(ctx, DATASET, tools)

    assert landed_seqs(ctx, first.extraction_id) == [1, 2, 3]
    assert landed_seqs(ctx, second.extraction_id) == [4, 5]


# ---------------------------------------------------------------- crashes and races


def test_a_crash_after_the_export_exports_again_into_a_new_attempt_and_lands_once(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools, clock: Clock
) -> None:
    warehouse.insert(5)
    warehouse.crash_after_export = True
    with pytest.raises(CrashError):
        extract_dataset(ctx, DATASET, tools)
    warehouse.crash_after_export = False
    warehouse.insert(3)  # more rows meanwhile: the plan's range holds

    while_leased = extract_dataset(ctx, DATASET, tools)
    clock.advance(61)  # the dead owner's lease expires
    resumed = extract_dataset(ctx, DATASET, tools)
    following = extract_dataset(ctx, DATASET, tools)

    assert while_leased.outcome == "in-progress"
    assert (resumed.outcome, resumed.high) == ("extracted", 5)
    assert [prefix.rsplit("/", 2)[-2] for _, _, prefix in warehouse.exports] == ["0", "1", "0"]
    assert landed_seqs(ctx, resumed.extraction_id) == [1, 2, 3, 4, 5]
    assert landed_seqs(ctx, following.extraction_id) == [6, 7, 8]
    assert not list(ctx.artifacts.list_names(f"datasets/{DATASET}/extraction/00000000/staging"))


def test_a_crash_while_copying_copies_only_the_missing_shards(
    ctx: StepContext,
    warehouse: FakeBigQuery,
    tools: ExtractTools,
    copier: MemoryCopier,
    clock: Clock,
) -> None:
    warehouse.insert(8)
    copier.crash_after = 1
    with pytest.raises(CrashError):
        extract_dataset(ctx, DATASET, tools)
    copier.crash_after = None
    clock.advance(61)

    resumed = extract_dataset(ctx, DATASET, tools)

    assert len(warehouse.exports) == 1  # the recorded export is reused
    assert len(copier.created) == 3
    assert len(set(copier.created)) == 3
    assert landed_seqs(ctx, resumed.extraction_id) == list(range(1, 9))


def test_a_crash_before_the_watermark_advances_lands_nothing_again(
    ctx: StepContext,
    warehouse: FakeBigQuery,
    tools: ExtractTools,
    copier: MemoryCopier,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cascade.steps import extract

    warehouse.insert(4)
    advance = extract._advance

    def die(*args: Any) -> None:
        raise CrashError("before the watermark")

    monkeypatch.setattr(extract, "_advance", die)
    with pytest.raises(CrashError):
        extract_dataset(ctx, DATASET, tools)
    monkeypatch.setattr(extract, "_advance", advance)
    created = len(copier.created)
    clock.advance(61)

    resumed = extract_dataset(ctx, DATASET, tools)

    assert resumed.outcome == "extracted"
    assert len(copier.created) == created
    assert len(warehouse.exports) == 1
    assert state(ctx).watermark == 4
    assert landed_seqs(ctx) == [1, 2, 3, 4]


def test_a_resumed_extraction_exports_the_planned_column_whatever_the_config_says(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools, clock: Clock
) -> None:
    warehouse.insert(3)
    warehouse.crash_after_export = True
    with pytest.raises(CrashError):
        extract_dataset(ctx, DATASET, tools)
    warehouse.crash_after_export = False
    changed = CONFIG.replace(b"column: seq", b"column: amount")
    push_pipeline_config(ctx.artifacts, DATASET, changed, where="pipeline.yaml")
    columns: list[str] = []
    export = warehouse.export

    def recording(dataset: str, source: BigQuerySource, *args: Any) -> None:
        columns.append(source.watermark.column)
        export(dataset, source, *args)

    warehouse.export = recording  # type: ignore[method-assign]
    clock.advance(61)

    resumed = extract_dataset(ctx, DATASET, tools)

    assert columns == ["seq"]
    assert landed_seqs(ctx, resumed.extraction_id) == [1, 2, 3]


def test_a_delivery_that_planned_a_different_high_follows_the_first_plan(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools
) -> None:
    warehouse.insert(3)
    racing = True

    def rival_plans_first() -> None:
        nonlocal racing
        if racing:  # this delivery read MAX = 3; rows arrive; a rival reads 5 and plans
            racing = False
            warehouse.insert(2)
            extract_dataset(ctx, DATASET, tools)

    warehouse.after_max = rival_plans_first

    mine = extract_dataset(ctx, DATASET, tools)

    assert [(low, high) for low, high, _ in warehouse.exports] == [(None, 5)]
    assert (mine.outcome, mine.high) == ("already-extracted", 5)
    assert landed_seqs(ctx) == [1, 2, 3, 4, 5]
    assert state(ctx).sequence == 1


def test_a_named_request_while_another_delivery_works_is_redelivered_later(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools
) -> None:
    warehouse.insert(2)
    warehouse.crash_after_export = True
    with pytest.raises(CrashError):
        extract_dataset(ctx, DATASET, tools)  # its lease is still live

    with pytest.raises(StepInProgressError):
        handle_extract_request(ctx, *event({"dataset": DATASET}), tools=tools)


# ---------------------------------------------------------------- sweeps and errors


def test_a_sweep_extracts_every_dataset_with_a_source_and_alerts_a_broken_one(
    ctx: StepContext, warehouse: FakeBigQuery, tools: ExtractTools
) -> None:
    push_pipeline_config(ctx.artifacts, "plain", b"label: y\n", where="pipeline.yaml")
    ctx.artifacts.write(
        "datasets/broken/pipeline.yaml",
        b"bigquery_source:\n  table: sources.x; DROP TABLE y\n"
        b"  watermark: {column: s, type: INT64}\n",
    )
    assert isinstance(ctx.artifacts, MemoryArtifactStore)
    # an operator's `gcloud storage cp -Z` of a config that is no gzip: it cannot be read
    ctx.artifacts.upload_encoded("datasets/zipped/pipeline.yaml", b"bigquery_source: {}\n")
    warehouse.insert(2)

    report = handle_extract_request(ctx, *event({}), tools=tools)

    assert [(item.dataset, item.outcome) for item in report.extractions] == [(DATASET, "extracted")]
    assert set(report.failures) == {"broken", "zipped"}
    assert "bigquery_source.table" in report.failures["broken"]
    assert "Content-Encoding: gzip" in report.failures["zipped"]
    assert isinstance(ctx.bus, RecordingBus)
    alerts = ctx.bus.of_type(Alert)
    assert sorted((alert.dataset, alert.step) for alert in alerts) == [  # type: ignore[attr-defined]
        ("broken", "extract"),
        ("zipped", "extract"),
    ]


def test_a_named_dataset_without_a_source_is_a_permanent_error(
    ctx: StepContext, tools: ExtractTools
) -> None:
    push_pipeline_config(ctx.artifacts, "plain", b"label: y\n", where="pipeline.yaml")

    with pytest.raises(PermanentError, match="names no bigquery_source"):
        handle_extract_request(ctx, *event({"dataset": "plain"}), tools=tools)


@pytest.mark.parametrize(
    "body",
    [
        {"dataset": "../x"},
        {"dataset": "Orders"},
        {"dataset": "a/b"},
        {"request_id": "a/../b"},
        {"dataset": DATASET, "extraction_id": "00000000-000000000000"},
        {"dataset": DATASET, "uri": "gs://elsewhere/"},
    ],
)
def test_a_request_naming_anything_but_a_dataset_is_refused(
    ctx: StepContext, tools: ExtractTools, body: dict[str, Any]
) -> None:
    from cascade.core.errors import BadRequestError

    with pytest.raises(BadRequestError):
        handle_extract_request(ctx, *event(body), tools=tools)


def test_the_schedule_and_the_function_agree_on_the_topic_and_the_message() -> None:
    topology = load_topology(Path(__file__).resolve().parents[2] / "infra" / "topology.yaml")
    schedule = topology.schedules["extract"]
    function = topology.functions["extract"]

    assert schedule.topic == function.trigger.topic == ExtractRequest.TOPIC
    assert ExtractRequest.model_validate(schedule.data).dataset is None
    assert function.access.tables_read == ("sources",)


# ---------------------------------------------------------------- BigQuery's requests


def source(kind: str = "INT64") -> BigQuerySource:
    return BigQuerySource.model_validate(
        {"table": "sources.orders", "watermark": {"column": "seq", "type": kind}}
    )


def spec_client(rows: list[tuple[Any, ...]]) -> Any:
    client = create_autospec(bigquery.Client, instance=True)
    client.project = "p-roj1"
    client.query.return_value.result.return_value = rows
    return client


def test_the_exporter_sends_the_export_with_parameters_never_values_in_the_text() -> None:
    client = spec_client([])
    exporter = BigQueryExporter(client, lambda name: f"cascade_{name}")

    exporter.export("orders", source(), 7, 11, "gs://art-bkt/datasets/orders/x/0/")

    [call] = client.query.call_args_list
    sql, config = call.args[0], call.kwargs["job_config"]
    assert sql == (
        "EXPORT DATA OPTIONS(uri='gs://art-bkt/datasets/orders/x/0/part-*.parquet', "
        "format='PARQUET', overwrite=true) AS SELECT * FROM `p-roj1.cascade_sources.orders` "
        "AS source WHERE `seq` > @low AND `seq` <= @high"
    )
    assert [(p.name, p.type_, p.value) for p in config.query_parameters] == [
        ("low", "INT64", 7),
        ("high", "INT64", 11),
    ]
    assert config.use_legacy_sql is False


def test_a_watermark_column_of_another_type_is_a_config_error() -> None:
    from datetime import UTC, datetime

    client = spec_client([(datetime(2026, 1, 1, tzinfo=UTC),)])
    exporter = BigQueryExporter(client, lambda name: name)

    with pytest.raises(InvalidConfigError, match=r"watermark: column 'seq' is not of type INT64"):
        exporter.max_watermark("orders", source("INT64"))


def test_bigquery_refusing_the_query_is_a_config_error_naming_the_source() -> None:
    from google.api_core import exceptions as gexc

    client = spec_client([])
    client.query.side_effect = gexc.BadRequest("Unrecognized name: seq")
    exporter = BigQueryExporter(client, lambda name: name)

    with pytest.raises(InvalidConfigError, match="bigquery_source: BigQuery refused"):
        exporter.max_watermark("orders", source())
