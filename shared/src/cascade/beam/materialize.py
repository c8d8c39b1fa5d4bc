"""The transform's materialisation as a Beam pipeline: the same split, file by file.

    python -m cascade.beam --mode=materialize \
        --request=gs://artifacts/dataflow/inputs/<run>/materialize.json \
        --output=gs://artifacts/dataflow/outputs/<run>/transform

writes the train/eval Parquet shards ``write_split_shards`` writes in the transform
step, with the transform package's own code: each snapshot file is one unit of work,
split by ``cascade.transform.materialize.split_file`` (the function path's loop body:
the same reads, casts, hashes, held-back eval rows and newest marker) into shards of its
own, ``<output>/{train,eval}/file-<index>/part-<n>.parquet``; then ``result.json``
(``MaterializeResult``: the shards in snapshot order and the counts the step records).

Duplicates across stream files are decided before any file is split, so the files can
be split in any order on any worker: every stream file's message ids are read with
their place ``(file index, row)``; grouped by id, every place but the first (the lowest:
acceptance order, then file order) is a duplicate; the duplicates' rows are grouped by
file and each file's split leaves out exactly those rows. That is the rule of the
function path's ``MessageIdFilter``, which sees the files in acceptance order.

Bad input never crashes the job: the first file's (in snapshot order) error is
``result.json``'s ``bad_input`` message, the one the function path raises first. An
object whose pinned generation is gone is refused as validate refuses it: ``the object
no longer exists (deleted or overwritten)``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import apache_beam as beam
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from google.api_core import exceptions as gexc

from cascade.beam.materialize_request import MaterializeRequest, MaterializeResult
from cascade.core.errors import BadInputError, TransientError
from cascade.core.store import ArtifactStore, new_storage_client
from cascade.transform.materialize import file_batches, split_file
from cascade.transform.shards import ShardWriter
from cascade.transform.snapshot import GcsObjectOpener, split_gs_uri
from cascade.transform.spec import SnapshotFile
from cascade.validation.avro_reader import MESSAGE_ID_COLUMN, MessageIdFilter
from cascade.validation.names import FileFormat, file_format_of
from cascade.validation.source import NETWORK_ERRORS

__all__ = ["MaterializeJob", "build", "run"]

RESULT_NAME = "result.json"
_log = logging.getLogger("cascade.beam.materialize")

Place = tuple[int, int]
"""A stream row's place: (index of its file in the snapshot, row in the file)."""


class MaterializeJob:
    """The request (read once by the driver) and where the shards go."""

    def __init__(self, request: MaterializeRequest, output: str) -> None:
        self.request = request
        self.output = output.rstrip("/")
        self.bucket, self.folder = split_gs_uri(self.output)

    def store(self, client: Any, bucket: str | None = None) -> ArtifactStore:
        return ArtifactStore(client, bucket or self.bucket)

    def is_stream(self, file: SnapshotFile) -> bool:
        try:
            _, name = split_gs_uri(file.uri)
            return file_format_of(name, uri=f"{file.uri}#{file.generation}") is FileFormat.AVRO
        except BadInputError:
            return False  # the split of the file names the problem


ATTEMPTS = 4
"""Tries of one unit of work after transient errors: Dataflow's own retries of a failed
work item in a batch job (FnApiRunner does not retry). Each unit is idempotent: the
same shard names with the same bytes."""
_BACKOFF_S = 0.5
_TRANSIENT = (TransientError, *NETWORK_ERRORS, gexc.TooManyRequests, gexc.ServerError)

ResultT = TypeVar("ResultT")


def retried(action: Callable[[], ResultT]) -> ResultT:
    """``action()``, tried again after a transient error (``ATTEMPTS`` in all)."""
    for attempt in range(ATTEMPTS - 1):
        try:
            return action()
        except _TRANSIENT as error:
            _log.warning("transient error, trying again: %s", error)
            time.sleep(_BACKOFF_S * 2**attempt)  # backoff between attempts
    return action()


def _storage_client() -> Any:
    return new_storage_client()


def _gone(file: SnapshotFile) -> BadInputError:
    return BadInputError(
        "the object no longer exists (deleted or overwritten)",
        uri=f"{file.uri}#{file.generation}",
    )


class _IdRecorder(MessageIdFilter):
    """Keeps every row and records the message ids in the order rows are read."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[Any] = []

    def keep_first(self, table: pa.Table) -> pa.Table:
        if MESSAGE_ID_COLUMN not in table.column_names:
            return table
        self.ids.extend(table.column(MESSAGE_ID_COLUMN).to_pylist())
        return table.drop_columns([MESSAGE_ID_COLUMN])


class _PlaceFilter(MessageIdFilter):
    """Leaves out the rows at the given places of one file (its duplicates)."""

    def __init__(self, duplicates: Iterable[int]) -> None:
        super().__init__()
        self._duplicates = frozenset(duplicates)
        self._row = 0

    def keep_first(self, table: pa.Table) -> pa.Table:
        if MESSAGE_ID_COLUMN not in table.column_names:
            return table
        rows = range(self._row, self._row + table.num_rows)
        self._row += table.num_rows
        keep = [row not in self._duplicates for row in rows]
        self.removed += keep.count(False)
        kept = table if all(keep) else table.filter(pa.array(keep))
        return kept.drop_columns([MESSAGE_ID_COLUMN])


class _WorkerDoFn(beam.DoFn):  # type: ignore[misc,unused-ignore]
    def __init__(self, job: MaterializeJob) -> None:
        self._job = job
        self._client: Any = None

    def setup(self) -> None:
        self._client = _storage_client()

    def opener(self) -> GcsObjectOpener:
        return GcsObjectOpener(lambda bucket: self._job.store(self._client, bucket))


class _MessageIds(_WorkerDoFn):
    """A stream file's ``(message id, place)`` for every row read; a file that cannot
    be read gives what it read (its split fails with the reason)."""

    def process(self, element: tuple[int, SnapshotFile]) -> Iterator[tuple[Any, Place]]:
        index, file = element
        ids = retried(lambda: self._ids(file))
        for row, message_id in enumerate(ids):
            yield message_id, (index, row)

    def _ids(self, file: SnapshotFile) -> list[Any]:
        recorder = _IdRecorder()
        request = self._job.request
        try:
            schema, config = request.row_schema(), request.validation
            for _ in file_batches(file, self.opener(), schema, config, recorder):
                pass
        except (BadInputError, gexc.NotFound):
            pass
        return recorder.ids


def _later_places(element: tuple[Any, Iterable[Place]]) -> Iterator[Place]:
    """Every place of one message id but the first."""
    _, places = element
    ordered = sorted(places)
    yield from ordered[1:]


class _SplitFile(_WorkerDoFn):
    """One file split into shards of its own; its counts, or its error."""

    def process(
        self, element: tuple[int, SnapshotFile], duplicates: dict[int, list[int]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        index, file = element
        yield index, retried(lambda: self._split(index, file, duplicates.get(index, ())))

    def _split(self, index: int, file: SnapshotFile, duplicates: Iterable[int]) -> dict[str, Any]:
        request = self._job.request
        store = self._job.store(self._client)
        train, evaluation = (
            ShardWriter(
                store,
                f"{self._job.folder}/{side}/file-{index:05d}",
                request.shard_schema(),
                rows_per_shard=request.rows_per_shard,
            )
            for side in ("train", "eval")
        )
        places = _PlaceFilter(duplicates)
        pins = {(newest.uri, newest.generation) for newest in request.newest}
        is_newest = (file.uri, file.generation) in pins
        try:
            if self.opener().stat(file.uri, file.generation) is None:
                raise _gone(file)
            eval_rows = split_file(
                file,
                self.opener(),
                (train, evaluation),
                schema=request.row_schema(),
                split=request.split,
                config=request.validation,
                duplicates=places,
                newest_column=request.newest_column,
                is_newest=is_newest,
            )
        except gexc.NotFound:
            return {"error": str(_gone(file))}
        except BadInputError as error:
            return {"error": str(error)}
        return {
            "train": [store.uri(name) for name in _closed(train)],
            "eval": [store.uri(name) for name in _closed(evaluation)],
            "train_rows": train.rows,
            "eval_rows": eval_rows,
            "newest_eval_rows": eval_rows if is_newest else 0,
            "duplicates": places.removed,
        }


def _closed(writer: ShardWriter) -> list[str]:
    """The writer's shards; a side without rows in this file has none."""
    return writer.close() if writer.rows else []


def result_of(files: Sequence[tuple[int, dict[str, Any]]]) -> MaterializeResult:
    """The split's result from every file's: the first file's error, else the shards in
    snapshot order and the summed counts."""
    ordered = [outcome for _, outcome in sorted(files, key=lambda item: item[0])]
    for outcome in ordered:
        if "error" in outcome:
            return MaterializeResult(status="bad_input", message=outcome["error"])
    return MaterializeResult(
        status="ok",
        train_files=[name for outcome in ordered for name in outcome["train"]],
        eval_files=[name for outcome in ordered for name in outcome["eval"]],
        train_rows=sum(outcome["train_rows"] for outcome in ordered),
        eval_rows=sum(outcome["eval_rows"] for outcome in ordered),
        newest_eval_rows=sum(outcome["newest_eval_rows"] for outcome in ordered),
        file_eval_rows=[outcome["eval_rows"] for outcome in ordered],
        duplicate_rows=sum(outcome["duplicates"] for outcome in ordered),
    )


class _WriteResult(_WorkerDoFn):
    def process(self, files: list[tuple[int, dict[str, Any]]]) -> Iterator[None]:
        result = result_of(files)
        retried(lambda: _write_result(self._job, self._client, result))
        yield from ()


def _write_result(job: MaterializeJob, client: Any, result: MaterializeResult) -> None:
    job.store(client).write(
        f"{job.folder}/{RESULT_NAME}",
        result.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )


def build(pipeline: Any, job: MaterializeJob) -> None:
    """The materialisation of ``job`` on ``pipeline``."""
    files = list(enumerate(job.request.files))
    streams = [(index, file) for index, file in files if job.is_stream(file)]
    duplicates = (
        pipeline
        | "Streams" >> beam.Create(streams)
        | "SpreadStreams" >> beam.Reshuffle()
        | "MessageIds" >> beam.ParDo(_MessageIds(job))
        | "ById" >> beam.GroupByKey()
        | "Later" >> beam.FlatMap(_later_places)
        | "ByFile" >> beam.GroupByKey()
        | "Rows" >> beam.MapTuple(lambda index, rows: (index, sorted(rows)))
    )
    (
        pipeline
        | "Files" >> beam.Create(files)
        | "SpreadFiles" >> beam.Reshuffle()
        | "Split" >> beam.ParDo(_SplitFile(job), beam.pvalue.AsDict(duplicates))
        | "Gather" >> beam.combiners.ToList()
        | "Result" >> beam.ParDo(_WriteResult(job))
    )


def _arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="The transform's split as Beam shards.")
    parser.add_argument("--request", required=True, help="MaterializeRequest JSON (gs://)")
    parser.add_argument("--output", required=True, help="gs:// folder for shards, result.json")
    return parser.parse_known_args(argv)


def _read_request(uri: str) -> MaterializeRequest:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(uri) as source:
        return MaterializeRequest.model_validate_json(source.read())


def run(argv: Sequence[str] | None = None, *, sdk_image: str | None = None) -> None:
    """Build and run the materialisation of ``argv``; on the FnApiRunner without
    ``--runner`` (a Flex Template launch submits and returns)."""
    from cascade.beam.pipeline import with_sdk_image

    arguments, beam_arguments = _arguments(argv)
    job = MaterializeJob(_read_request(arguments.request), arguments.output)
    options = PipelineOptions(with_sdk_image(beam_arguments, sdk_image), save_main_session=False)
    if options.view_as(StandardOptions).runner is not None:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, job)
        pipeline.run()
        return
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    with beam.Pipeline(runner=FnApiRunner(), options=options) as local:
        build(local, job)
