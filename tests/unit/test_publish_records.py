"""``cascade publish-records``: rows of a file as messages; what the topic refuses is
dead-lettered with the reason, never dropped; a refused batch's good rows still go out.

The publisher here is a first-class fake with the client's ``publish`` signature that
behaves as Pub/Sub does with a schema: a publish request (a batch) is all or nothing,
and a message that is not a JSON object of the schema's fields is refused with
``InvalidArgument`` (the emulator's "Could not parse message";
tests/integration/test_stream_ingestion.py checks the real one).
"""

from __future__ import annotations

import gzip
import json
from concurrent.futures import Future
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions as gexc

from cascade.cli.publish_records import publish_records
from cascade.core.errors import BadInputError, BadRequestError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.settings import Settings
from cascade.core.streams import StreamDeadLetter

FIELDS = {"age", "region"}
TOPIC = "projects/cascade-local/topics/cascade-ingest-credit"


class SchemaTopic:
    """Batches of ``batch`` messages; a batch with one bad message fails whole."""

    def __init__(self, batch: int = 3) -> None:
        self.batch = batch
        self.pending: list[tuple[bytes, Future[str]]] = []
        self.stored: list[bytes] = []
        self.topics: set[str] = set()

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        self.topics.add(topic)
        future: Future[str] = Future()
        self.pending.append((data, future))
        if len(self.pending) >= self.batch:
            self.send()
        return future

    def send(self) -> None:
        batch, self.pending = self.pending, []
        if any(not _fits(data) for data, _ in batch):
            for _, future in batch:
                future.set_exception(gexc.InvalidArgument("Could not parse message"))
            return
        for data, future in batch:
            self.stored.append(data)
            future.set_result(str(len(self.stored)))


def _fits(data: bytes) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == FIELDS and isinstance(value["age"], int)


class AutoSendTopic(SchemaTopic):
    """A batch goes out when full; what is left, when a result is asked for."""

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        future = super().publish(topic, data, **attributes)
        original = future.result

        def result(timeout: float | None = None) -> str:
            if not future.done():
                self.send()
            return original(timeout)

        future.result = result  # type: ignore[method-assign]
        return future


def _publish(
    path: Path, topic: SchemaTopic | None = None
) -> tuple[object, SchemaTopic, MemoryArtifactStore]:
    topic = topic or AutoSendTopic()
    store = MemoryArtifactStore("cascade-artifacts")
    report = publish_records(Settings(), "credit", path, topic, store)
    return report, topic, store


def _lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"age": 40, "region": "north"})


def test_every_good_row_is_published_once(tmp_path: Path) -> None:
    report, topic, _ = _publish(_lines(tmp_path / "rows.ndjson", [GOOD] * 7))
    assert (report.rows, report.published, report.dead_lettered) == (7, 7, 0)
    assert len(topic.stored) == 7
    assert topic.topics == {TOPIC}


def test_a_refused_batch_publishes_its_good_rows_alone_and_dead_letters_the_bad(
    tmp_path: Path,
) -> None:
    lines = [
        GOOD,
        "{not json",
        GOOD,
        json.dumps({"age": "forty", "region": "x"}),
        json.dumps({"age": 1}),
        GOOD,
        "",  # blank lines are no rows
        json.dumps({"age": 2, "region": "nörd ✓ 北"}),
    ]
    report, topic, store = _publish(_lines(tmp_path / "rows.ndjson", lines))

    assert (report.rows, report.published, report.dead_lettered) == (7, 4, 3)
    assert len(topic.stored) == 4  # nothing twice
    assert [letter.location for letter in report.dead_letters] == ["row 2", "row 4", "row 5"]
    assert all("Could not parse message" in letter.reason for letter in report.dead_letters)
    name = report.dead_letters_uri.removeprefix("gs://cascade-artifacts/")
    assert name.startswith("datasets/credit/stream_dead_letters/publish-")
    stored = store.read(name)
    assert stored is not None
    letters = [StreamDeadLetter.model_validate_json(x) for x in stored.data.splitlines()]
    assert [letter.data for letter in letters] == [
        "{not json",
        '{"age": "forty", "region": "x"}',
        '{"age": 1}',
    ]


def test_a_huge_row_is_cut_in_its_dead_letter(tmp_path: Path) -> None:
    report, _, _ = _publish(_lines(tmp_path / "rows.ndjson", ["x" * 100_000]))
    assert report.dead_lettered == 1
    assert len(report.dead_letters[0].data) == 1024


def test_csv_rows_are_typed_json(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("age,region\n40,north\n41,south\n", encoding="utf-8")
    report, topic, _ = _publish(path)
    assert report.published == 2
    assert json.loads(topic.stored[0]) == {"age": 40, "region": "north"}


def test_a_nan_parquet_value_is_dead_lettered_here(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    table = pa.table({"age": [1.0, float("nan")], "region": ["a", "b"]})
    pq.write_table(table, path)
    report, _, _ = _publish(path)
    assert report.dead_lettered == 2  # 1.0 is no integer for the schema; NaN is no JSON
    reasons = {letter.location: letter.reason for letter in report.dead_letters}
    assert "finite numbers only" in reasons["row 2"]
    assert "the topic refused" in reasons["row 1"]


def test_a_binary_parquet_value_is_dead_lettered_not_sent_as_its_repr(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"age": [40, 41], "region": [b"\x00north", b"south"]}), path)
    report, topic, _ = _publish(path)
    assert report.published == 0
    assert topic.stored == []
    assert {letter.reason for letter in report.dead_letters} == {
        "field 'region' is binary: a record's values are JSON text"
    }


def test_gzipped_ndjson_is_read(tmp_path: Path) -> None:
    path = tmp_path / "rows.ndjson.gz"
    path.write_bytes(gzip.compress((GOOD + "\n").encode() * 3))
    report, _, _ = _publish(path)
    assert report.published == 3


@pytest.mark.parametrize("dataset", ["Credit", "../credit", "credit/x", "", "a" * 64])
def test_a_dataset_that_is_no_dataset_name_is_refused(tmp_path: Path, dataset: str) -> None:
    path = _lines(tmp_path / "rows.ndjson", [GOOD])
    with pytest.raises(BadRequestError):
        publish_records(Settings(), dataset, path, AutoSendTopic(), MemoryArtifactStore("a-b-c"))


@pytest.mark.parametrize("name", ["rows.avro", "rows.txt", "rows"])
def test_a_file_of_another_format_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"whatever")
    with pytest.raises(BadInputError):
        _publish(path)
