"""Where a batch's instances come from: a BigQuery table or files in a bucket.

A source yields ``SourceRow`` (its position in the source and the column values) and has
an ``identity``: what it is and which version of it (a table's last modification, each
object's generation), from which the batch id is derived — the same table, unchanged,
is the same batch.

- ``BigQueryTableSource`` reads the table with the BigQuery Storage Read API (one read
  session, Arrow record batches over gRPC, only the columns asked for), the way
  Google recommends reading a whole table: values arrive typed (INT64 as int, FLOAT64 as
  float, NULL as None), as ``tabledata.list`` gives them. The session has one stream,
  so an unchanged table's rows come in the same order on every read (row numbers name
  the parts a retried batch must not load twice; streams read in parallel would not).
  There is no fallback: a refused session (the reader lacks
  ``roles/bigquery.readSessionUser`` or read on the dataset) fails the batch, and the
  error says the Storage Read API refused it.
- ``FileSource`` reads objects of a bucket through the ``ArtifactStore``: CSV (a header
  row; every value is text, converted by the model's input dtype later), JSONL (one
  object per line) or Parquet (by the object name's suffix). A line that is not a JSON
  object is a row error, not the end of the batch.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import google.cloud.bigquery as bigquery
import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as gexc

from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore
from cascade.core.warehouse_read import read_client_for

if TYPE_CHECKING:
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

__all__ = [
    "FORMATS",
    "BigQueryTableSource",
    "FileFormat",
    "FileSource",
    "InstanceSource",
    "SourceRow",
    "file_format",
]

FileFormat = Literal["csv", "jsonl", "parquet"]
FORMATS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
PAGE_SIZE = 1000
"""Rows turned into Python values at a time (a slice of an Arrow record batch)."""
MAX_DECODED_INPUT_BYTES = 4 * 1024 * 1024 * 1024
"""The most an input file stored gzip-encoded (``gcloud storage cp -Z``) may expand to:
a batch task holds each file whole, on a machine sized for its inputs."""
READ_SESSION_HINT = (
    "reading a table needs bigquery.readsessions.create on the project "
    "(roles/bigquery.readSessionUser: the topology's `bigquery-read-sessions` api) and "
    "bigquery.tables.getData on the table (tables_read of its dataset)"
)


@dataclass(frozen=True)
class SourceRow:
    """One input row: ``number`` is its position in the batch (0-based, across files),
    ``origin`` the table or object it came from; ``problem`` set when the row could not
    even be read (then ``values`` is empty)."""

    number: int
    origin: str
    values: dict[str, Any]
    text: bool = False
    """True when every value is text (CSV): converted by the input's dtype."""
    problem: str | None = None


class InstanceSource(Protocol):
    @property
    def identity(self) -> str:
        """What is read, and which version of it: the batch id is derived from this."""
        ...

    @property
    def uri(self) -> str: ...

    def rows(self) -> Iterator[SourceRow]: ...


class BigQueryTableSource:
    """A BigQuery table, read with the Storage Read API.

    ``read_client`` defaults to the one that goes with ``client``
    (``cascade.core.warehouse_read.read_client_for``: the same endpoint and identity), made
    for each read and closed after it. ``columns`` (default: every column) are the
    session's selected fields, in the table's order; ``page_size`` rows of a record
    batch are turned into Python values at a time."""

    def __init__(
        self,
        client: bigquery.Client,
        table: str,
        *,
        page_size: int = PAGE_SIZE,
        read_client: BigQueryReadClient | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        self._client = client
        self._page_size = page_size
        self._read_client = read_client
        self._table = client.get_table(table)
        self.table = f"{self._table.project}.{self._table.dataset_id}.{self._table.table_id}"
        names = [field.name for field in self._table.schema]
        if columns is not None:
            missing = sorted(set(columns) - set(names))
            if missing:
                raise BadInputError(f"no such column(s) {missing}", uri=self.uri)
        self._columns = names if columns is None else [name for name in names if name in columns]

    @property
    def uri(self) -> str:
        return f"bq://{self.table}"

    @property
    def identity(self) -> str:
        modified = self._table.modified
        stamp = modified.isoformat() if modified is not None else "unknown"
        return f"{self.uri}@{stamp}#{self._table.num_rows}"

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def read_only(self, names: Collection[str]) -> None:
        """Read only the columns among ``names`` (a model's inputs: a wide table's other
        columns are never fetched nor turned into Python values); a column of ``names``
        the table lacks stays missing, for each row to report. Without any of them, every
        column is still read (an empty selection would mean all of them anyway)."""
        kept = [name for name in self._columns if name in names]
        if kept:
            self._columns = kept

    def rows(self) -> Iterator[SourceRow]:
        """One read session (Arrow, one stream), each record batch turned into rows."""
        reader = self._read_client or read_client_for(self._client)
        try:
            number = 0
            for batch in self._batches(reader):
                for start in range(0, batch.num_rows, self._page_size):
                    for values in batch.slice(start, self._page_size).to_pylist():
                        yield SourceRow(number, self.uri, values)
                        number += 1
        finally:
            if self._read_client is None:
                reader.transport.close()  # type: ignore[no-untyped-call]

    def _batches(self, reader: BigQueryReadClient) -> Iterator[pa.RecordBatch]:
        from google.cloud.bigquery_storage_v1 import types

        path = (
            f"projects/{self._table.project}/datasets/{self._table.dataset_id}"
            f"/tables/{self._table.table_id}"
        )
        requested = types.ReadSession(
            table=path,
            data_format=types.DataFormat.ARROW,
            read_options=types.ReadSession.TableReadOptions(selected_fields=self._columns),
        )
        try:
            session = reader.create_read_session(
                parent=f"projects/{self._client.project}",
                read_session=requested,
                max_stream_count=1,
            )
        except gexc.GoogleAPICallError as error:
            raise self._storage_error(error, "CreateReadSession") from error
        if not session.streams:
            return  # an empty table
        # The messages' Arrow IPC bodies, read against the session's schema (the
        # library's own page.to_arrow() is deprecated in favour of pandas-gbq).
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        for stream in session.streams:
            try:
                for message in reader.read_rows(stream.name):  # type: ignore[no-untyped-call]
                    body = message.arrow_record_batch.serialized_record_batch
                    if body:
                        yield pa.ipc.read_record_batch(pa.py_buffer(body), schema)
            except gexc.GoogleAPICallError as error:
                raise self._storage_error(error, "ReadRows") from error

    def _storage_error(
        self, error: gexc.GoogleAPICallError, method: str
    ) -> gexc.GoogleAPICallError:
        """``error`` (its class kept: retrying stays decided by it) saying that the
        Storage Read API answered it, and, for a refusal, what reading needs."""
        refused = error.code == 403
        hint = f"; {READ_SESSION_HINT}" if refused else ""
        return type(error)(
            f"the BigQuery Storage Read API {'refused' if refused else 'failed'} reading "
            f"{self.table} ({method}): {error.message}{hint}",
            errors=error.errors,
            response=error.response,
        )


def file_format(name: str) -> FileFormat:
    for suffix, kind in FORMATS.items():
        if name.lower().endswith(suffix):
            return kind
    raise BadInputError(
        f"{name!r}: not a file batch prediction reads (suffixes: {', '.join(sorted(FORMATS))})"
    )


@dataclass
class FileSource:
    """Objects of one bucket (``names``, or every object under ``prefix``), read in name
    order; each one's format from its suffix."""

    store: ArtifactStore
    names: Sequence[str]
    _generations: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise BadInputError("no files to score")
        for name in self.names:
            file_format(name)
            info = self.store.stat(name)
            if info is None:
                raise BadInputError("no such object", uri=self.store.uri(name))
            self._generations[name] = info.generation

    @classmethod
    def under(cls, store: ArtifactStore, prefix: str) -> FileSource:
        """Every readable object under ``prefix`` (a folder of part files)."""
        names = sorted(name for name in store.list_names(prefix) if _known(name))
        if not names:
            raise BadInputError("no CSV, JSONL or Parquet objects here", uri=store.uri(prefix))
        return cls(store, names)

    @property
    def uri(self) -> str:
        return ",".join(self.store.uri(name) for name in self.names)

    @property
    def identity(self) -> str:
        return ",".join(
            f"{self.store.uri(name)}#{self._generations[name]}" for name in sorted(self.names)
        )

    def rows(self) -> Iterator[SourceRow]:
        number = 0
        for name in self.names:
            stored = self.store.read(
                name,
                generation=self._generations[name],
                max_decoded_bytes=MAX_DECODED_INPUT_BYTES,
            )
            if stored is None:
                raise BadInputError(
                    "the object changed or vanished while the batch ran", uri=self.store.uri(name)
                )
            origin = self.store.uri(name)
            for values, text, problem in _parse(file_format(name), stored.data):
                yield SourceRow(number, origin, values, text=text, problem=problem)
                number += 1


def _known(name: str) -> bool:
    return any(name.lower().endswith(suffix) for suffix in FORMATS)


def _parse(kind: FileFormat, data: bytes) -> Iterator[tuple[dict[str, Any], bool, str | None]]:
    if kind == "parquet":
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as error:  # pyarrow raises several kinds for a corrupt file
            raise BadInputError(f"not a Parquet file: {error}") from error
        for batch in table.to_batches(max_chunksize=PAGE_SIZE):
            for values in batch.to_pylist():
                yield values, False, None
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInputError(f"the file is not UTF-8 text: {error}") from error
    if kind == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            return
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                problem = f"{len(cells)} values for {len(header)} header columns"
                yield {}, True, problem
                continue
            yield dict(zip(header, cells, strict=True)), True, None
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            yield {}, False, f"not valid JSON: {error}"
            continue
        if type(value) is not dict:
            yield {}, False, "a JSONL line must be a JSON object"
            continue
        yield value, False, None
