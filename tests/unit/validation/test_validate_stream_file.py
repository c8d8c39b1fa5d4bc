"""validate on a stream file (Avro, from a Pub/Sub Cloud Storage subscription): unusable
records split out as dead letters with file, message id and reason, counted on the run,
alerted; the usable rows validated and accepted as any file's."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, DataValidated
from cascade.core.observability import run_logger
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.streams import StreamDeadLetter
from cascade.core.validation_config import ValidationConfig
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes
from cascade.steps import stream_records
from cascade.steps.validate import handle_object_finalized, validate_landed_object
from cascade.transform.materialize import file_batches
from cascade.transform.snapshot import GcsObjectOpener, build_snapshot
from cascade.validation.manifest import AcceptedFile
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context

LANDING = "cascade-landing"
NAME = "credit/stream-2026-12-01/00_00_00Z_0b7e.avro"
WHEN = datetime(2026, 12, 1, tzinfo=UTC)
_INTS = ("age", "term_months", "credit_score", "num_late_payments", "defaulted")


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


def _records(rows: int) -> list[bytes]:
    reader = csv.DictReader(io.StringIO(sample_csv(rows, seed=5).decode()))
    out = []
    for row in reader:
        typed: dict[str, object] = dict(row)
        for column in _INTS:
            typed[column] = int(row[column])
        for column in ("income", "loan_amount"):
            typed[column] = float(row[column])
        out.append(json.dumps(typed).encode())
    return out


def _land(storage: FakeStorageClient, messages: list[bytes]) -> StorageObjectEvent:
    data = avro_file_bytes(
        "projects/p/subscriptions/s",
        [Message(f"m{i}", WHEN, {}, body) for i, body in enumerate(messages, start=1)],
    )
    generation = storage.put(LANDING, NAME, data)
    return StorageObjectEvent(
        event_id="e1", bucket=LANDING, name=NAME, generation=generation, size=len(data)
    )


def test_unusable_records_are_dead_lettered_and_the_rest_accepted(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    records = _records(300)
    records[10] = b"{broken json"
    records[20] = b'{"age": {"nested": 1}}'

    outcome = handle_object_finalized(ctx, _land(storage, records))

    assert outcome is not None
    assert outcome.state == "succeeded"
    assert outcome.outputs["records_landed"] == 300
    assert outcome.outputs["records_rejected"] == 2
    assert "298 examples" in outcome.summary
    assert "2 of 300 records split out" in outcome.summary
    name = outcome.outputs["dead_letters"].removeprefix("gs://cascade-artifacts/")
    stored = ctx.artifacts.read(name)
    assert stored is not None
    letters = [StreamDeadLetter.model_validate_json(line) for line in stored.data.splitlines()]
    assert [(x.location, x.message_id) for x in letters] == [
        ("record 11", "m11"),
        ("record 21", "m21"),
    ]
    assert letters[0].source.startswith(f"gs://{LANDING}/{NAME}")
    assert "not valid JSON" in letters[0].reason
    assert "holds a dict" in letters[1].reason
    assert isinstance(ctx.bus, RecordingBus)
    alerts = [m for m in ctx.bus.published if isinstance(m, Alert)]
    assert [a.severity for a in alerts] == ["WARNING"]
    assert alerts[0].details["dead_letters"] == outcome.outputs["dead_letters"]
    assert any(isinstance(m, DataValidated) for m in ctx.bus.published)


def test_many_dead_letters_are_written_in_bounded_parts_and_none_is_lost(
    ctx: StepContext, storage: FakeStorageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_records, "PART_BYTES", 2048)  # a few letters a part
    records = _records(300)
    for position in range(0, 300, 3):
        records[position] = b"{broken json"

    outcome = handle_object_finalized(ctx, _land(storage, records))

    assert outcome is not None
    assert outcome.outputs["records_rejected"] == 100
    first = outcome.outputs["dead_letters"].removeprefix("gs://cascade-artifacts/")
    parts = outcome.outputs["dead_letter_parts"]
    assert parts > 3
    names = [first] + [first.replace(".jsonl", f"-part-{n:04d}.jsonl") for n in range(1, parts)]
    letters = []
    for name in names:
        stored = ctx.artifacts.read(name)
        assert stored is not None
        assert len(stored.data) <= 2048
        letters += [StreamDeadLetter.model_validate_json(x) for x in stored.data.splitlines()]
    assert [x.message_id for x in letters] == [f"m{n}" for n in range(1, 301, 3)]
    assert isinstance(ctx.bus, RecordingBus)
    (alert,) = [m for m in ctx.bus.published if isinstance(m, Alert)]
    assert len(alert.details["rejected"]) == 20


def test_a_clean_stream_file_is_counted_without_dead_letters(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    outcome = handle_object_finalized(ctx, _land(storage, _records(200)))

    assert outcome is not None
    assert (outcome.outputs["records_landed"], outcome.outputs["records_rejected"]) == (200, 0)
    assert "dead_letters" not in outcome.outputs
    assert isinstance(ctx.bus, RecordingBus)
    assert not [m for m in ctx.bus.published if isinstance(m, Alert)]


def test_a_stream_file_of_only_unusable_records_fails_its_run_with_the_reason(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    outcome = handle_object_finalized(ctx, _land(storage, [b"nope", b"[1]"]))

    assert outcome is not None
    assert outcome.state == "failed"
    assert "no record of the stream file is a usable row" in outcome.summary
    assert "record 1" in outcome.summary


def test_a_step_resumed_after_acceptance_reports_the_same_counts(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    records = _records(120)
    records[5] = b"[]"
    event = _land(storage, records)
    first = handle_object_finalized(ctx, event)
    assert first is not None
    run = ctx.ledger.get(first.outputs["manifest"].split("/")[-1].removesuffix(".json"))
    assert run is not None

    resumed = validate_landed_object(ctx, run, event, run_logger("test"))

    assert resumed.outputs["records_landed"] == first.outputs["records_landed"] == 120
    assert resumed.outputs["records_rejected"] == first.outputs["records_rejected"] == 1
    assert resumed.outputs["dead_letters"] == first.outputs["dead_letters"]


STREAM_SCHEMA = Path(__file__).resolve().parents[3] / "infra" / "schemas" / "credit.avsc"
STRICT_COLUMNS = b"validation:\n  severities:\n    unexpected_feature: error\n"


def _with_field(record: bytes, name: str, value: object) -> bytes:
    return json.dumps({**json.loads(record), name: value}).encode()


@pytest.mark.parametrize("deployed", [True, False], ids=["stream-schema", "no-stream-schema"])
def test_another_producers_field_splits_out_its_records_not_the_batch(
    ctx: StepContext, storage: FakeStorageClient, deployed: bool
) -> None:
    """A producer that adds a field (the topic accepts it) costs its own records, with
    the field named, not every other producer's records of the batch. Without the
    stream's schema deployed, the field is a new column, which this dataset's config
    makes an error: the whole batch would be quarantined."""
    push_pipeline_config(ctx.artifacts, "credit", STRICT_COLUMNS, where="pipeline.yaml")
    if deployed:
        ctx.artifacts.write(DatasetPaths("credit").stream_schema, STREAM_SCHEMA.read_bytes())
    first = handle_object_finalized(ctx, _land(storage, _records(300)))  # the schema's origin
    assert first is not None
    assert first.state == "succeeded"
    records = _records(300)
    for position in (7, 8):
        records[position] = _with_field(records[position], "channel", "web")

    outcome = handle_object_finalized(ctx, _land(storage, records))

    assert outcome is not None
    if not deployed:
        assert outcome.run_state == "rejected"  # the whole batch, into quarantine
        assert "channel" in outcome.summary
        return
    assert outcome.state == "succeeded"
    assert (outcome.outputs["records_landed"], outcome.outputs["records_rejected"]) == (300, 2)
    assert "298 examples" in outcome.summary
    name = outcome.outputs["dead_letters"].removeprefix("gs://cascade-artifacts/")
    stored = ctx.artifacts.read(name)
    assert stored is not None
    letters = [StreamDeadLetter.model_validate_json(line) for line in stored.data.splitlines()]
    assert [(x.location, x.message_id) for x in letters] == [("record 8", "m8"), ("record 9", "m9")]
    assert letters[0].reason == "field 'channel' is not in the stream's schema"
    manifest = ctx.artifacts.read_model(outcome.outputs["manifest"].split("/", 3)[3], AcceptedFile)
    assert manifest is not None
    assert manifest[0].record_fields == sorted(
        field["name"] for field in json.loads(STREAM_SCHEMA.read_text())["fields"]
    )


def test_transform_leaves_out_the_records_validate_split_out(
    ctx: StepContext, storage: FakeStorageClient, clock: Clock
) -> None:
    """The manifest's fields, not the schema object read later, decide: a schema that
    since admitted the field changes nothing for a file already judged."""
    ctx.artifacts.write(DatasetPaths("credit").stream_schema, STREAM_SCHEMA.read_bytes())
    records = _records(50)
    records[3] = _with_field(records[3], "channel", "web")
    outcome = handle_object_finalized(ctx, _land(storage, records))
    assert outcome is not None
    assert outcome.state == "succeeded"
    widened = json.loads(STREAM_SCHEMA.read_text())
    widened["fields"].append({"name": "channel", "type": ["null", "string"]})
    ctx.artifacts.write(DatasetPaths("credit").stream_schema, json.dumps(widened).encode())

    snapshot = build_snapshot(
        ctx.artifacts,
        GcsObjectOpener(ctx.store),
        dataset="credit",
        run_id="transform-run",
        now=clock(),
    )
    [file] = snapshot.files
    schema = pa.schema([("age", pa.int64()), ("income", pa.float64())])
    rows = sum(
        table.num_rows
        for table in file_batches(file, GcsObjectOpener(ctx.store), schema, ValidationConfig())
    )

    assert file.rows == rows == 49


def test_a_stored_stream_schema_that_is_no_record_fails_the_run_naming_it(
    ctx: StepContext, storage: FakeStorageClient
) -> None:
    ctx.artifacts.write(DatasetPaths("credit").stream_schema, b'{"type": "enum"}')

    outcome = handle_object_finalized(ctx, _land(storage, _records(20)))

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert "gs://cascade-artifacts/datasets/credit/stream_schema.avsc#" in outcome.summary
    assert "not an Avro record schema" in outcome.summary
