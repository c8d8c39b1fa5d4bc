"""Stream the snapshot's files into train/eval Parquet shards.

Each file is read at its pinned generation in bounded record batches (the validation
readers: CSV, gzip CSV, Parquet, NDJSON), its columns cast to the shard schema, each
row sent to train or eval by its hash, and the rows appended to the split's writer.
Memory holds one batch and one open shard per split.

Every file with rows on both sides contributes eval rows: when none of a file's rows
hashed under the eval fraction, its rows with the lowest hash (one row, or every row of
one key for a ``key`` split) go to eval instead of train, as long as the file keeps train
rows. Those rows are held back until the file ends, so the choice depends on the file's
content alone and a re-run writes the same shards. A newest file (``newest``) is thus
always in the eval split the candidate and the production model are compared on.

With ``newest_column``, each row also gets that boolean column: true when its file is
one of ``newest`` (``cascade.transform.newest``). The column is appended after the split
is decided, so it never changes which side a row is on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.transform.shard_columns import canonical_table
from cascade.transform.shards import ShardWriter
from cascade.transform.snapshot import ObjectOpener, split_gs_uri
from cascade.transform.spec import SnapshotFile, SplitSpec
from cascade.transform.split import eval_fractions
from cascade.validation.avro_reader import MessageIdFilter
from cascade.validation.names import FileFormat, file_format_of
from cascade.validation.reader import read_batches
from cascade.validation.source import DataSource
from cascade.validation.widening import ColumnWidening

__all__ = [
    "DEFAULT_ROWS_PER_SHARD",
    "SplitShards",
    "SplitStopped",
    "file_batches",
    "split_file",
    "write_split_shards",
]

DEFAULT_ROWS_PER_SHARD = 500_000
_MAX_RESTARTS = 64


@dataclass(frozen=True)
class SplitShards:
    train_names: list[str]
    eval_names: list[str]
    train_rows: int
    eval_rows: int
    newest_eval_rows: int = 0
    file_eval_rows: list[int] = field(default_factory=list)
    """Eval rows of each file, in the order of the files given."""
    duplicate_rows: int = 0
    """Stream rows left out as a message already read from an earlier file."""


def _source(file: SnapshotFile, opener: ObjectOpener) -> DataSource:
    _, name = split_gs_uri(file.uri)
    uri = f"{file.uri}#{file.generation}"
    info = opener.stat(file.uri, file.generation)
    return DataSource(
        uri=uri,
        file_format=file_format_of(name, uri=uri),
        size=None if info is None else info.size,
        open=lambda: opener.open(file.uri, file.generation),
        content_encoding="" if info is None else info.content_encoding,
        record_fields=None if file.record_fields is None else frozenset(file.record_fields),
    )


def _read_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {field.name: field.type for field in schema}


def file_batches(
    file: SnapshotFile,
    opener: ObjectOpener,
    schema: pa.Schema,
    config: ValidationConfig,
    duplicates: MessageIdFilter | None = None,
) -> Iterator[pa.Table]:
    """The file's rows as tables of ``schema``, in file order; a stream file's rows
    whose message id ``duplicates`` has seen already are left out.

    Columns outside the schema are read with the types the reader infers; when one of
    them turns out wider (``ColumnWidening``), the file is read again with the wider
    type and the rows already produced are skipped, so each row comes out once.
    """
    source = _source(file, opener)
    column_types = _read_types(schema)
    duplicates = duplicates if duplicates is not None else MessageIdFilter()
    produced = 0
    for _ in range(_MAX_RESTARTS):
        seen = 0
        try:
            # Only a stream file's ids are Pub/Sub's: another file's column of that
            # name is the user's data, never deduplicated.
            stream = source.file_format is FileFormat.AVRO
            batches = read_batches(source, config, column_types, message_ids=stream)
            for batch in batches:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                fresh = table.slice(produced - seen) if seen < produced else table
                seen += table.num_rows
                if seen <= produced:
                    continue
                produced = seen
                fresh = duplicates.keep_first(fresh) if stream else fresh
                if fresh.num_rows:  # a batch of messages all read before yields nothing
                    yield canonical_table(fresh, schema, uri=source.uri)
            return
        except ColumnWidening as widening:
            if widening.column in schema.names:
                raise BadInputError(
                    f"column {widening.column!r} has a value that is not "
                    f"{schema.field(widening.column).type}",
                    uri=source.uri,
                    location=f"column {widening.column!r}",
                ) from widening
            column_types[widening.column] = widening.new_type
    raise BadInputError(f"column types did not settle after {_MAX_RESTARTS} reads", uri=source.uri)


class _FileSplit:
    """One file's rows sent to train and eval, its lowest-hash train rows held back."""

    def __init__(self, train: ShardWriter, evaluation: ShardWriter) -> None:
        self._train = train
        self._evaluation = evaluation
        self.eval_rows = 0
        self.train_rows = 0
        self._held: list[pa.Table] = []
        self._held_fraction = float("inf")

    def write(self, table: pa.Table, fractions: npt.NDArray[np.float64], cut: float) -> None:
        in_eval = fractions < cut
        self._evaluation.write(table.filter(pa.array(in_eval)))
        self.eval_rows += int(in_eval.sum())
        rest, rest_fractions = table.filter(pa.array(~in_eval)), fractions[~in_eval]
        self.train_rows += rest.num_rows
        if self.eval_rows:
            self._release(to_eval=False)
            self._train.write(rest)
            return
        if not rest.num_rows:
            return
        lowest = float(rest_fractions.min())
        if lowest < self._held_fraction:
            self._release(to_eval=False)
            self._held_fraction = lowest
        if lowest == self._held_fraction:
            held = rest_fractions == lowest
            self._held.append(rest.filter(pa.array(held)))
            rest = rest.filter(pa.array(~held))
        self._train.write(rest)

    def finish(self) -> None:
        held_rows = sum(table.num_rows for table in self._held)
        to_eval = self.eval_rows == 0 and self.train_rows > held_rows
        if to_eval:
            self.eval_rows += held_rows
            self.train_rows -= held_rows
        self._release(to_eval=to_eval)

    def _release(self, *, to_eval: bool) -> None:
        writer = self._evaluation if to_eval else self._train
        for table in self._held:
            writer.write(table)
        self._held, self._held_fraction = [], float("inf")


def _marked(table: pa.Table, column: str | None, value: bool) -> pa.Table:
    if column is None:
        return table
    return table.append_column(pa.field(column, pa.bool_()), pa.array([value] * table.num_rows))


def split_file(
    file: SnapshotFile,
    opener: ObjectOpener,
    writers: tuple[ShardWriter, ShardWriter],
    *,
    schema: pa.Schema,
    split: SplitSpec,
    config: ValidationConfig,
    duplicates: MessageIdFilter,
    newest_column: str | None,
    is_newest: bool,
) -> int:
    """Send one file's rows to ``writers`` (train, eval); the file's eval rows.

    The whole split of one file: ``write_split_shards`` runs it for each file in order,
    the Beam materialisation (``cascade.beam.materialize``) for each file in parallel.
    """
    sides = _FileSplit(*writers)
    for table in file_batches(file, opener, schema, config, duplicates):
        fractions = eval_fractions(table, split)
        sides.write(_marked(table, newest_column, is_newest), fractions, split.eval_fraction)
    sides.finish()
    return sides.eval_rows


class SplitStopped(Exception):  # noqa: N818 - a signal, not an error
    """The split was abandoned when its ``stop`` said so; ``names``: the shards written."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"split abandoned after {len(names)} shard(s)")
        self.names = names


def write_split_shards(
    store: ArtifactStore,
    files: list[SnapshotFile],
    opener: ObjectOpener,
    *,
    schema: pa.Schema,
    split: SplitSpec,
    folder: str,
    config: ValidationConfig,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    newest: Collection[SnapshotFile] = (),
    newest_column: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> SplitShards:
    """Write ``folder``/train/part-*.parquet and ``folder``/eval/part-*.parquet.

    ``stop`` is asked before each file; when it answers True the split is abandoned
    (``SplitStopped``, the shards written so far named on it)."""
    shard_schema = schema
    if newest_column is not None:
        shard_schema = schema.append(pa.field(newest_column, pa.bool_()))
    train = ShardWriter(store, f"{folder}/train", shard_schema, rows_per_shard=rows_per_shard)
    evaluation = ShardWriter(store, f"{folder}/eval", shard_schema, rows_per_shard=rows_per_shard)
    newest_pins = {(file.uri, file.generation) for file in newest}
    file_eval_rows: list[int] = []
    newest_eval_rows = 0
    duplicates = MessageIdFilter()  # across every stream file of the snapshot, in order
    for file in files:
        if stop is not None and stop():
            raise SplitStopped([*train.names, *evaluation.names])  # uploaded so far
        is_newest = (file.uri, file.generation) in newest_pins
        eval_rows = split_file(
            file,
            opener,
            (train, evaluation),
            schema=schema,
            split=split,
            config=config,
            duplicates=duplicates,
            newest_column=newest_column,
            is_newest=is_newest,
        )
        file_eval_rows.append(eval_rows)
        newest_eval_rows += eval_rows if is_newest else 0
    return SplitShards(
        train_names=train.close(),
        eval_names=evaluation.close(),
        train_rows=train.rows,
        eval_rows=evaluation.rows,
        newest_eval_rows=newest_eval_rows,
        file_eval_rows=file_eval_rows,
        duplicate_rows=duplicates.removed,
    )
