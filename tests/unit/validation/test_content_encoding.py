"""Landed objects stored with ``Content-Encoding: gzip`` (``gcloud storage cp -Z``).

Cloud Storage keeps such an object compressed and would decompress it while serving it;
the storage client, sent the compressed bytes, decompresses them itself, whole, with no
limit on what they expand to. Cascade reads the bytes as stored and decompresses them
in its bounded readers, as it does a ``.csv.gz``: the file validates as if uploaded
plain, a file that expands past ``max_uncompressed_bytes`` is refused by name, and a
format read by byte ranges (Parquet, Avro) is refused with what to do instead.
"""

from __future__ import annotations

import contextlib
import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cascade.core.errors import BadInputError
from cascade.core.events import StorageObjectEvent
from cascade.core.paths import RunPaths
from cascade.core.runs import run_id_for_object
from cascade.core.store import ObjectInfo
from cascade.core.validation_config import ValidationConfig
from cascade.steps.validate import handle_object_finalized
from cascade.transform.materialize import file_batches
from cascade.transform.snapshot import SnapshotFile
from cascade.validation.names import FileFormat
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context
from tests.unit.validation.test_validate_step import _csv

LANDING, DATASET = "cascade-landing", "credit"
DATA = _csv(1, rows=300)


def _validate(clock: Clock, name: str, stored: bytes, encoding: str) -> tuple[object, bytes]:
    """Land ``stored`` under ``encoding`` and validate it: the outcome, and the
    statistics written (empty when none were)."""
    storage = FakeStorageClient()
    ctx = validate_step_context(storage, clock)
    generation = storage.put(LANDING, name, stored, content_encoding=encoding)
    event = StorageObjectEvent(
        event_id="e1", bucket=LANDING, name=name, generation=generation, size=len(stored)
    )
    outcome = handle_object_finalized(ctx, event)
    assert outcome is not None
    run = RunPaths(run_id_for_object(DATASET, LANDING, name, generation))
    stats = ctx.artifacts.read(f"{run.step_dir('validation')}/stats.pb")
    return outcome, b"" if stats is None else stats.data


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        pytest.param(f"{DATASET}/day-1.csv", gzip.compress(DATA), id="csv-encoded"),
        # gcloud storage cp -Z of a .csv.gz: compressed twice
        pytest.param(
            f"{DATASET}/day-1.csv.gz", gzip.compress(gzip.compress(DATA)), id="csv.gz-twice"
        ),
        # a .csv.gz uploaded with Content-Encoding: gzip set by hand: compressed once
        pytest.param(f"{DATASET}/day-1.csv.gz", gzip.compress(DATA), id="csv.gz-labelled"),
    ],
)
def test_a_gzip_encoded_file_validates_as_the_plain_file_does(
    clock: Clock, name: str, stored: bytes
) -> None:
    """The fake client, as the real one, decompresses a gzip-encoded object whole
    unless asked for the stored bytes: a step that let it would fail here."""
    plain, plain_stats = _validate(clock, name, gzip.compress(DATA) if ".gz" in name else DATA, "")

    encoded, encoded_stats = _validate(clock, name, stored, "gzip")

    assert encoded.state == plain.state == "succeeded"  # type: ignore[attr-defined]
    assert encoded_stats == plain_stats != b""


def test_an_encoded_file_that_expands_past_the_limit_fails_naming_the_file() -> None:
    bomb = gzip.compress(b"a,b\n" + b"1,2\n" * 400_000)  # 1.6 MB once decompressed, 5 KB
    source = _memory_source("gs://l/credit/bomb.csv", FileFormat.CSV, bomb, "gzip")
    config = ValidationConfig(max_uncompressed_bytes=1_000_000, read_block_bytes=64 * 1024)

    with pytest.raises(BadInputError, match="max_uncompressed_bytes") as caught:
        for _ in read_batches(source, config):
            pass

    assert "gs://l/credit/bomb.csv" in str(caught.value)


@pytest.mark.parametrize("file_format", [FileFormat.PARQUET, FileFormat.AVRO])
def test_a_ranged_format_stored_gzip_encoded_is_refused_with_what_to_do(
    file_format: FileFormat,
) -> None:
    source = _memory_source(f"gs://l/credit/x.{file_format.value}", file_format, b"x", "gzip")

    with pytest.raises(BadInputError, match="Content-Encoding: gzip") as caught:
        list(read_batches(source, ValidationConfig()))

    assert "without Content-Encoding" in str(caught.value)


def test_a_parquet_file_stored_gzip_encoded_fails_the_run(clock: Clock) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"amount": [1.0, 2.0], "city": ["a", "b"]}), buffer)

    outcome, stats = _validate(
        clock, f"{DATASET}/day-1.parquet", gzip.compress(buffer.getvalue()), "gzip"
    )

    assert outcome.run_state == "failed"  # type: ignore[attr-defined]
    assert "Content-Encoding: gzip" in outcome.summary  # type: ignore[attr-defined]
    assert stats == b""


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_a_file_stored_under_another_compression_fails_the_run_naming_it(
    clock: Clock, encoding: str
) -> None:
    """Cloud Storage decompresses only gzip: a ``br`` object's bytes are served as stored
    and would otherwise fail as binary, with no word of the encoding."""
    outcome, stats = _validate(clock, f"{DATASET}/day-1.csv", b"\x1b\x8b\x05\x80" * 40, encoding)

    assert outcome.run_state == "failed"  # type: ignore[attr-defined]
    summary = outcome.summary  # type: ignore[attr-defined]
    assert f"Content-Encoding: {encoding}" in summary
    assert f"gs://{LANDING}/{DATASET}/day-1.csv" in summary
    assert stats == b""


@pytest.mark.parametrize("encoding", ["", "identity", "utf-8"])
def test_other_encodings_are_read_as_stored(encoding: str) -> None:
    """Only gzip is transcoded by Cloud Storage; a label such as ``utf-8`` (a common
    slip) leaves the bytes as they are."""
    source = _memory_source("gs://l/credit/x.csv", FileFormat.CSV, DATA, encoding)
    rows = sum(batch.num_rows for batch in read_batches(source, ValidationConfig()))
    assert rows == 300


@pytest.mark.parametrize("name", ["x.csv", "x.csv.gz"])
def test_corrupt_encoded_bytes_are_bad_input(name: str) -> None:
    file_format = FileFormat.CSV_GZIP if name.endswith(".gz") else FileFormat.CSV
    source = _memory_source(f"gs://l/{name}", file_format, b"\x1f\x8b not really", "gzip")

    with pytest.raises(BadInputError, match="cannot decompress"):
        list(read_batches(source, ValidationConfig()))


class _EncodedOpener:
    """The transform's ``ObjectOpener`` over one object stored gzip-encoded."""

    def __init__(self, stored: bytes) -> None:
        self.stored = stored

    def stat(self, uri: str, generation: int) -> ObjectInfo | None:
        return ObjectInfo(uri, generation, len(self.stored), None, content_encoding="gzip")

    def open(self, uri: str, generation: int) -> contextlib.nullcontext[io.BytesIO]:
        return contextlib.nullcontext(io.BytesIO(self.stored))


def test_the_transform_reads_a_gzip_encoded_file_as_the_plain_file() -> None:
    file = SnapshotFile(uri=f"gs://{LANDING}/{DATASET}/day-1.csv", generation=7, rows=300)
    schema = pa.schema([("amount", pa.float64()), ("age", pa.int64()), ("city", pa.string())])

    tables = list(
        file_batches(file, _EncodedOpener(gzip.compress(DATA)), schema, ValidationConfig())
    )

    table = pa.concat_tables(tables)
    assert table.num_rows == 300
    assert table.column("city").to_pylist()[:3] == [
        line.split(b",")[2].decode() for line in DATA.splitlines()[1:4]
    ]


def _memory_source(uri: str, file_format: FileFormat, data: bytes, encoding: str) -> DataSource:
    return DataSource.in_memory(uri, file_format, data, content_encoding=encoding)
