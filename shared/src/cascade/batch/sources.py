"""Where a batch's instances come from: a BigQuery table or files in a bucket.

A source yields ``SourceRow`` (its position in the source and the column values) and has
an ``identity``: what it is and which version of it (a table's last modification, each
object's generation), from which the batch id is derived — the same table, unchanged,
is the same batch.

- ``BigQueryTableSource`` pages through the table with ``tabledata.list``
  (``Client.list_rows``): values arrive typed (INT64 as int, FLOAT64 as float, NULL as
  None).
- ``FileSource`` reads objects of a bucket through the ``ArtifactStore``: CSV (a header
  row; every value is text, converted by the model's input dtype later), JSONL (one
  object per line) or Parquet (by the object name's suffix). A line that is not a JSON
  object is a row error, not the end of the batch.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import google.cloud.bigquery as bigquery
import pyarrow.parquet as pq

from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore

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
"""Rows per ``tabledata.list`` page."""


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
    """A BigQuery table, read page by page with the real client."""

    def __init__(self, client: bigquery.Client, table: str, *, page_size: int = PAGE_SIZE) -> None:
        self._client = client
        self._table = client.get_table(table)
        self._page_size = page_size
        self.table = f"{self._table.project}.{self._table.dataset_id}.{self._table.table_id}"

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
        return [field.name for field in self._table.schema]

    def rows(self) -> Iterator[SourceRow]:
        """Page by page, each page converted to Arrow at once (the client's row objects
        cost several schema copies per row)."""
        number = 0
        found = self._client.list_rows(self._table, page_size=self._page_size)
        for batch in found.to_arrow_iterable():
            for values in batch.to_pylist():
                yield SourceRow(number, self.uri, values)
                number += 1


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
            stored = self.store.read(name, generation=self._generations[name])
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
