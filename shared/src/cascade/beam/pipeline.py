"""The Beam pipeline of a big file's statistics: the same code on Dataflow and locally.

    python -m cascade.beam.pipeline --input=gs://landing/d/big.csv --uri=... \
        --file_format=csv --validation_config='{...}' --output=gs://artifacts/runs/R/beam

reads the file in byte ranges of whole lines (``cascade.beam.blocks``), summarises
each range with the validation package's readers and summaries, joins the ranges'
column types and summarises again the ranges read narrower than the join
(``cascade.beam.block_statistics``), merges the summaries with a CombineFn over
``DatasetSummary.merged``, and writes ``statistics.pb`` (the tensorflow-metadata
``DatasetFeatureStatisticsList`` the in-function path writes) then ``result.json``,
the completion record the step reads: ``{"status": "ok", ...}`` or
``{"status": "bad_input", "message": ...}`` naming the file and where.

Without ``--runner`` it runs on Beam's FnApiRunner in this process, to the end (never
Prism, whose binary the DirectRunner would first try to download). A Flex Template launch
passes ``--runner=DataflowRunner`` and the job's options: the job is submitted and the
program returns (docs/beam.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
)

from cascade.beam.block_statistics import (
    BatchReader,
    BlockSummary,
    joined_types,
    needs_reread,
    source_reader,
    summarize_block,
)
from cascade.beam.blocks import (
    ByteRange,
    block_ranges,
    block_source,
    header_end,
    is_splittable,
    parquet_range_batches,
    read_range,
    row_group_ranges,
)
from cascade.core.errors import BadInputError
from cascade.core.validation_config import ValidationConfig
from cascade.validation.names import FileFormat
from cascade.validation.reader import check_size
from cascade.validation.source import DataSource
from cascade.validation.statistics import statistics_proto
from cascade.validation.summaries import DatasetSummary

__all__ = ["BeamStatisticsJob", "main", "run"]

DEFAULT_BLOCK_BYTES = 64 * 1024 * 1024
STATISTICS_NAME = "statistics.pb"
RESULT_NAME = "result.json"
_NO_ROWS = {
    FileFormat.CSV: ("the file has a header but no data rows", "line 2"),
    FileFormat.NDJSON: ("the file has no JSON records", ""),
}


class BeamStatisticsJob:
    """What one run of the pipeline computes: the file, how to read it, where to write."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.input: str = arguments.input
        self.generation: int = arguments.generation
        self.uri: str = arguments.uri or arguments.input
        self.file_format = FileFormat(arguments.file_format)
        self.config = ValidationConfig.model_validate_json(arguments.validation_config)
        self.float_features = frozenset(json.loads(arguments.float_features))
        self.string_features = frozenset(json.loads(arguments.string_features))
        self.output: str = arguments.output.rstrip("/")
        self.block_bytes: int = arguments.block_bytes
        self.record_fields: frozenset[str] | None = (
            None
            if arguments.record_fields is None
            else frozenset(json.loads(arguments.record_fields))
        )
        """A stream file: the fields its records may hold (``DataSource.record_fields``)."""
        self.content_encoding = ""
        """The object's ``Content-Encoding``, known once ``size`` has read its metadata
        (before the pipeline is built, so every worker has it)."""

    def _blob(self) -> Any:
        """The pinned generation of a gs:// object, through the storage client (Beam's
        GCS filesystem reads the live generation only)."""
        from cascade.core.store import new_storage_client

        bucket, _, name = self.input.removeprefix("gs://").partition("/")
        return new_storage_client().bucket(bucket).blob(name, generation=self.generation)

    def open_raw(self) -> Any:
        """The object's bytes as stored (gzip, a file's own or a gzip
        ``Content-Encoding``, is undone by the readers, bounded; not by Beam or the
        storage client)."""
        if self.generation and self.input.startswith("gs://"):
            return self._blob().open("rb", raw_download=True)
        return FileSystems.open(self.input, compression_type=CompressionTypes.UNCOMPRESSED)

    def size(self) -> int:
        """The object's size (and ``content_encoding``); BadInputError when the
        generation is gone."""
        if self.generation and self.input.startswith("gs://"):
            from google.api_core import exceptions as gexc

            blob = self._blob()
            try:
                blob.reload()
            except gexc.NotFound:
                raise BadInputError(
                    "the object no longer exists (deleted or overwritten)", uri=self.uri
                ) from None
            self.content_encoding = blob.content_encoding or ""
            return int(blob.size)
        return int(FileSystems.match([self.input])[0].metadata_list[0].size_in_bytes)

    def source(self, size: int) -> DataSource:
        """The object as a whole file to read (its first ``size`` bytes)."""
        return DataSource(
            self.uri,
            self.file_format,
            size,
            self.open_raw,
            content_encoding=self.content_encoding,
            record_fields=self.record_fields,
        )

    def splittable(self) -> bool:
        """Read in ranges: a format cut at lines or row groups, stored as it is (a
        gzip ``Content-Encoding`` is one stream, read whole)."""
        return is_splittable(self.file_format, self.config) and not self.source(0).gzip_encoded

    def column_types(self) -> dict[str, Any]:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        types: dict[str, Any] = {name: pa.float64() for name in self.float_features}
        types.update({name: pa.string() for name in self.string_features})
        return types


def _ranges(job: BeamStatisticsJob) -> tuple[list[ByteRange], int]:
    """The ranges to read in parallel and where the data lines start; checks the size."""
    size = job.size()
    check_size(job.source(size), job.config)
    if not job.splittable():
        return [ByteRange(0, 0, size)], 0
    with job.open_raw() as raw:
        if job.file_format is FileFormat.PARQUET:
            return row_group_ranges(raw, job.block_bytes, uri=job.uri), 0
        first_line = header_end(raw, job.file_format, uri=job.uri)
    return block_ranges(size, first_line, job.block_bytes), first_line


class _SummarizeRange(beam.DoFn):  # type: ignore[misc,unused-ignore]
    """One range read as its own file; ``final_types`` given: read with those types."""

    def __init__(self, job: BeamStatisticsJob, first_line: int) -> None:
        self._job = job
        self._first_line = first_line

    def _reader(self, block: ByteRange) -> BatchReader | None:
        job = self._job
        if not job.splittable():
            return source_reader(job.source(block.end), job.config)
        if job.file_format is FileFormat.PARQUET:
            return lambda _: parquet_range_batches(job.open_raw, block, job.config, uri=job.uri)
        with job.open_raw() as raw:
            header = b""
            if self._first_line:
                raw.seek(0)
                header = raw.read(self._first_line)
            body = read_range(raw, block, self._first_line)
        if not body:
            return None  # a range inside one long line: its line belongs to an earlier one
        return source_reader(block_source(job.uri, job.file_format, header, body), job.config)

    def summarize(self, block: ByteRange, types: dict[str, Any]) -> BlockSummary:
        read = self._reader(block)
        if read is None:
            return BlockSummary(block.index, DatasetSummary(), {})
        return summarize_block(
            read,
            self._job.config,
            uri=self._job.uri,
            index=block.index,
            column_types=types,
            float_features=self._job.float_features,
        )

    def process(self, block: ByteRange) -> Iterator[tuple[ByteRange, BlockSummary]]:
        yield block, self.summarize(block, self._job.column_types())


class _Settle(beam.DoFn):  # type: ignore[misc,unused-ignore]
    """Keep a range read with the final types; read the others again with them."""

    def __init__(self, summarize: _SummarizeRange, job: BeamStatisticsJob) -> None:
        self._summarize = summarize
        self._job = job

    def process(
        self, element: tuple[ByteRange, BlockSummary], final_types: dict[str, Any]
    ) -> Iterator[BlockSummary]:
        block, summary = element
        if summary.error is None and needs_reread(summary, final_types):
            types = {**final_types, **self._job.column_types()}
            summary = self._summarize.summarize(block, types)
        yield summary


class _JoinTypes(beam.CombineFn):  # type: ignore[misc,unused-ignore]
    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, types: dict[str, Any], element: tuple[ByteRange, BlockSummary]) -> Any:
        return joined_types(types, element[1].types)

    def merge_accumulators(self, accumulators: Any) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for types in accumulators:
            merged = joined_types(merged, types)
        return merged

    def extract_output(self, types: dict[str, Any]) -> dict[str, Any]:
        return types


class MergeSummaries(beam.CombineFn):  # type: ignore[misc,unused-ignore]
    """``DatasetSummary.merged`` as a CombineFn. The earliest range's error wins, named
    with the rows of the ranges before it (all read without error, or theirs would win).

    The accumulator: the merged summary, the earliest ``(index, BlockError)`` and the
    number of rows of each range read.
    """

    def __init__(self, max_values: int) -> None:
        self._max_values = max_values

    def create_accumulator(self) -> Any:
        return DatasetSummary(), None, {}

    def add_input(self, accumulator: Any, block: BlockSummary) -> Any:
        error = (block.index, block.error) if block.error is not None else None
        own = (block.summary, error, {block.index: block.summary.num_examples})
        return self.merge_accumulators([accumulator, own])

    def merge_accumulators(self, accumulators: Any) -> Any:
        summary, error, rows = DatasetSummary(), None, {}
        for other_summary, other_error, other_rows in accumulators:
            summary = summary.merged(other_summary, self._max_values)
            if other_error is not None and (error is None or other_error[0] < error[0]):
                error = other_error
            rows.update(other_rows)
        return summary, error, rows

    def extract_output(self, accumulator: Any) -> tuple[DatasetSummary, str | None]:
        summary, error, rows = accumulator
        if error is not None:
            index, block_error = error
            rows_before = sum(count for other, count in rows.items() if other < index)
            return summary, block_error.in_file(rows_before)
        return summary.compacted(self._max_values), None


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path) as target:
        target.write(data)


def _write_result(job: BeamStatisticsJob, merged: Any, blocks: int) -> None:
    summary, error = merged
    if error is None and summary.num_examples == 0:
        message, location = _NO_ROWS.get(job.file_format, ("the file has no rows", ""))
        error = str(BadInputError(message, uri=job.uri, location=location))
    if error is not None:
        _write_bytes(f"{job.output}/{RESULT_NAME}", _bad_input(error))
        return
    proto = statistics_proto(summary, job.config, name=job.uri)
    _write_bytes(f"{job.output}/{STATISTICS_NAME}", proto.SerializeToString())
    result = {"status": "ok", "num_examples": summary.num_examples, "blocks": blocks}
    _write_bytes(f"{job.output}/{RESULT_NAME}", json.dumps(result).encode())


def _bad_input(message: str) -> bytes:
    return json.dumps({"status": "bad_input", "message": message}).encode()


def build(pipeline: Any, job: BeamStatisticsJob, ranges: list[ByteRange], first_line: int) -> None:
    """The statistics pipeline of ``job`` on ``pipeline``, over ``ranges`` of its file."""
    summarize = _SummarizeRange(job, first_line)
    read = (
        pipeline
        | "Ranges" >> beam.Create(ranges)
        | "Reshuffle" >> beam.Reshuffle()
        | "Summarize" >> beam.ParDo(summarize)
    )
    final_types = read | "JoinTypes" >> beam.CombineGlobally(_JoinTypes())
    (
        read
        | "Settle" >> beam.ParDo(_Settle(summarize, job), beam.pvalue.AsSingleton(final_types))
        | "Merge" >> beam.CombineGlobally(MergeSummaries(job.config.max_tracked_values))
        | "Write" >> beam.Map(lambda merged: _write_result(job, merged, len(ranges)))
    )


def _arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--input", required=True, help="gs:// or local path of the file")
    parser.add_argument("--generation", type=int, default=0, help="the object's generation")
    parser.add_argument("--uri", default="", help="the file's name in messages and statistics")
    parser.add_argument("--file_format", required=True, choices=[f.value for f in FileFormat])
    parser.add_argument("--validation_config", default="{}", help="ValidationConfig as JSON")
    parser.add_argument("--float_features", default="[]", help="JSON list: FLOAT in the schema")
    parser.add_argument("--string_features", default="[]", help="JSON list: BYTES in the schema")
    parser.add_argument("--output", required=True, help="folder for statistics.pb, result.json")
    parser.add_argument("--block_bytes", type=int, default=DEFAULT_BLOCK_BYTES)
    parser.add_argument("--record_fields", default=None, help="JSON list: stream fields")
    return parser.parse_known_args(argv)


SDK_IMAGE_ENV = "CASCADE_BEAM_SDK_IMAGE"
"""Set in the Flex Template image (shared/Dockerfile.beam) to the image itself: the
workers run the image the launcher runs (Google's sample passes it as the
``sdk_container_image`` option)."""


def with_sdk_image(beam_arguments: Sequence[str], sdk_image: str | None) -> list[str]:
    """``beam_arguments`` with ``--sdk_container_image`` when the image names itself and
    the launch did not choose one."""
    arguments = list(beam_arguments)
    if sdk_image and not any(a.startswith("--sdk_container_image") for a in arguments):
        arguments.append(f"--sdk_container_image={sdk_image}")
    return arguments


def run(argv: Sequence[str] | None = None, *, sdk_image: str | None = None) -> None:
    """Build and run the pipeline of ``argv``; on the FnApiRunner without ``--runner``."""
    arguments, beam_arguments = _arguments(argv)
    beam_arguments = with_sdk_image(beam_arguments, sdk_image)
    job = BeamStatisticsJob(arguments)
    try:
        ranges, first_line = _ranges(job)
    except BadInputError as error:  # refused before any range is read: size, header
        _write_bytes(f"{job.output}/{RESULT_NAME}", _bad_input(str(error)))
        return
    options = PipelineOptions(beam_arguments, save_main_session=False)
    if options.view_as(StandardOptions).runner is not None:
        # A Flex Template launch: submit and return. The launcher must exit once the job
        # is submitted (Google: never wait_until_finish in a template's program).
        pipeline = beam.Pipeline(options=options)
        build(pipeline, job, ranges, first_line)
        pipeline.run()
        return
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    with beam.Pipeline(runner=FnApiRunner(), options=options) as local:
        build(local, job, ranges, first_line)


def main() -> None:
    import os

    run(sys.argv[1:], sdk_image=os.environ.get(SDK_IMAGE_ENV))


if __name__ == "__main__":
    main()
