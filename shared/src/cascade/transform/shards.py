"""Parquet shards written to the artifacts bucket as rows stream in.

A writer keeps one shard open in memory (compressed Parquet, row group per batch) and
uploads it once it holds ``rows_per_shard`` rows, so memory is bounded by one shard
whatever the dataset size. Names are ``<prefix>/part-00000.parquet`` upwards: the same
rows in the same order give the same shards, so a re-run overwrites them identically.
"""

from __future__ import annotations

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

from cascade.core.store import ArtifactStore

__all__ = ["PARQUET_CONTENT_TYPE", "ShardWriter"]

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


class ShardWriter:
    def __init__(
        self, store: ArtifactStore, prefix: str, schema: pa.Schema, *, rows_per_shard: int
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._schema = schema
        self._rows_per_shard = rows_per_shard
        self._sink: pa.BufferOutputStream | None = None
        self._writer: pq.ParquetWriter | None = None
        self._shard_rows = 0
        self.rows = 0
        self.names: list[str] = []

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (of this writer's schema), rolling over to new shards as needed."""
        offset = 0
        while offset < table.num_rows:
            writer = self._open()
            take = min(table.num_rows - offset, self._rows_per_shard - self._shard_rows)
            writer.write_table(table.slice(offset, take))
            offset += take
            self._shard_rows += take
            self.rows += take
            if self._shard_rows >= self._rows_per_shard:
                self._flush()

    def close(self) -> list[str]:
        """Upload the last shard; a split without rows still gets one (empty) shard."""
        if self._writer is not None or not self.names:
            self._open()
            self._flush()
        return list(self.names)

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self._sink = pa.BufferOutputStream()
            self._writer = pq.ParquetWriter(self._sink, self._schema, compression="snappy")
        return self._writer

    def _flush(self) -> None:
        assert self._writer is not None
        assert self._sink is not None
        self._writer.close()
        name = f"{self._prefix}/part-{len(self.names):05d}.parquet"
        self._store.write(
            name, self._sink.getvalue().to_pybytes(), content_type=PARQUET_CONTENT_TYPE
        )
        self.names.append(name)
        self._writer, self._sink, self._shard_rows = None, None, 0
