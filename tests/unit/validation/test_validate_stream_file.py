"""validate on a stream file (Avro, from a Pub/Sub Cloud Storage subscription): unusable
records split out as dead letters with file, message id and reason, counted on the run,
alerted; the usable rows validated and accepted as any file's."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import Alert, DataValidated
from cascade.core.observability import run_logger
from cascade.core.streams import StreamDeadLetter
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes
from cascade.steps import stream_records
from cascade.steps.validate import handle_object_finalized, validate_landed_object
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
