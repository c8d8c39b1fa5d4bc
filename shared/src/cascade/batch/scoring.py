"""Batch scoring: every row of a source through one model version, one prediction per key
into BigQuery, every row that cannot be scored into an errors table with the reason.

Tables (names are data: built with ``table_id``, never from raw input)::

    <project>.cascade_predictions.<dataset>_v<version>          one row per scored key
    <project>.cascade_predictions.<dataset>_v<version>_errors   one row per refused row

(``-`` in a dataset name becomes ``_``: BigQuery table names take letters, digits, ``_``.)

The model is the exported SavedModel: it takes the raw feature values and a passthrough
key, and carries its own transform, so scoring here is exactly what the model server and
Vertex AI compute. A row is turned into an instance by the model's input dtypes (a
BigQuery NULL or an empty CSV cell is the model's missing value: NaN for a float input,
``""`` for a string input; integer and bool inputs have none), then checked by the
serving request rules (``cascade.serving.request_rules``) and scored in chunks. A row
fails alone, never its chunk:

- no key, a null or empty key, a key that is not a string or is over ``MAX_KEY_BYTES``;
- a key seen earlier in the batch (``duplicate key``: one prediction per key per batch);
- a column the model needs is missing, or a value of the wrong type;
- the model refuses the chunk: the chunk is bisected until the refused rows are alone;
- the model's output is not finite (BigQuery's JSON has no NaN) or changes the key.

Idempotence: the batch id is derived from the dataset, the model version and the source's
identity (table + last modification, or objects + generations); rows are appended by
load jobs named ``cascade_batch_<batch id>_p<part>`` (``_e<part>`` for errors), and
BigQuery runs a job id once, so a retried batch loads no part twice (a load job, not
streaming inserts: no streaming cost or quota, and exactly once rather than insertId's
best effort); a create-only marker per loaded part in the artifacts bucket does the same
where job ids are not enforced (the local BigQuery); a manifest
``models/<dataset>/batch-predictions/<batch id>.json`` written create-only at the end
makes a re-run of a finished batch a no-op that returns the first run's counts.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import google.cloud.bigquery as bigquery
import tensorflow as tf

from cascade.batch.jobs import batch_id_for
from cascade.batch.sources import InstanceSource, SourceRow
from cascade.batch.tables import (
    ERRORS_SCHEMA,
    MAX_KEY_BYTES,
    PREDICTIONS_DATASET,
    PREDICTIONS_SCHEMA,
    SHOWN_CHARS,
    BatchManifest,
    ensure_table,
    manifest_name,
    output_tables,
    part_name,
)
from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import JsonText, load_rows
from cascade.serving import request_rules
from cascade.serving.servable import Servable

__all__ = [
    "CHUNK_ROWS",
    "ERRORS_SCHEMA",
    "MAX_KEY_BYTES",
    "PREDICTIONS_DATASET",
    "PREDICTIONS_SCHEMA",
    "BatchManifest",
    "BatchResult",
    "PredictionSink",
    "batch_id_for",
    "manifest_name",
    "output_tables",
    "part_name",
    "score_source",
    "summary",
]

CHUNK_ROWS = 1000
LOAD_ROWS = 100_000
"""Rows per load job: few jobs per batch (BigQuery allows 1,500 loads per table a day)."""
"""Rows per model call (and per insert)."""
GC_THRESHOLD = 50_000
_ANSWER_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False, sort_keys=True)
"""One encoder for every answer (``json.dumps`` with options builds one per call)."""
"""New objects between two collections of the youngest generation while a batch scores."""

_FLOATS = frozenset({"DT_FLOAT", "DT_DOUBLE", "DT_HALF"})
_INT = re.compile(r"\s*[+-]?\d+\s*")
_MODEL_ERRORS = (tf.errors.OpError, ValueError, TypeError)
"""What a model call raises for inputs it refuses (InvalidArgumentError is an OpError)."""


class PredictionSink(Protocol):
    """Where scored answers also go (the precomputed store): ``(key, prediction)`` pairs
    of one dataset and version. ``cascade.serving.precomputed.PrecomputedStore`` fits."""

    def write(
        self, dataset: str, version: str, rows: Iterable[tuple[str, dict[str, Any]]]
    ) -> int: ...


@dataclass(frozen=True)
class BatchResult:
    manifest: BatchManifest
    skipped: bool
    """True when the batch had already run (its manifest existed): nothing was written."""


@dataclass(frozen=True)
class _Item:
    row: SourceRow
    key: str
    instance: dict[str, Any]


@dataclass(frozen=True)
class _Failure:
    row: SourceRow
    key: str | None
    field: str
    reason: str


class _BadValueError(ValueError):
    pass


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _convert(value: Any, dtype: str, text: bool) -> Any:
    """A source value as the model input ``dtype`` takes it; ``_BadValueError`` says why not."""
    kind = type(value)
    if kind is str and dtype == "DT_STRING":
        return value  # the common cases first: a batch converts every value of every row
    if kind is float and dtype in _FLOATS and not text:
        return value
    if dtype == "DT_STRING":
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        raise _BadValueError(f"a string input takes text, not {_kind(value)}")
    if dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF"):
        if value is None or (text and isinstance(value, str) and not value.strip()):
            return math.nan
        if text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _BadValueError(f"not a number: {value!r:.80}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _BadValueError(f"a float input takes a number, not {_kind(value)}")
    if dtype == "DT_BOOL":
        if text and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, bool):
            return value
        raise _BadValueError(f"a bool input takes true or false, not {_kind(value)}")
    # integer dtypes: no missing value
    if text and isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _BadValueError(
        f"an integer input takes an integer (it has no missing value), not {_kind(value)}"
        + (f": {value!r:.80}" if isinstance(value, str | float) else "")
    )


def _key_problem(key: Any) -> str | None:
    if key is None:
        return "the key is null"
    if not isinstance(key, str):
        return f"the key must be a string, not {_kind(key)}"
    if not key:
        return "the key is empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "the key is not valid Unicode"
    if size > MAX_KEY_BYTES:
        return f"the key is {size} bytes of UTF-8, over the {MAX_KEY_BYTES}-byte limit"
    return None


class _Preparer:
    """Source rows to instances of the model's signature; remembers the keys seen."""

    def __init__(self, servable: Servable) -> None:
        if servable.key is None:
            raise BadInputError(
                "the model has no passthrough key (a string input that is also an output): "
                "batch predictions need one to say which row each answer belongs to"
            )
        self.key = servable.key
        key = servable.key
        self._features = [(name, dtype) for name, dtype in servable.inputs.items() if name != key]
        self._seen: dict[str, int] = {}

    def prepare(self, row: SourceRow) -> _Item | _Failure:
        if row.problem is not None:
            return _Failure(row, None, "", row.problem)
        values = row.values
        if self.key not in values:
            return _Failure(row, None, self.key, f"no {self.key!r} column: the key is missing")
        key = values[self.key]
        # An ASCII key of at most MAX_KEY_BYTES characters has nothing to check further.
        plain = type(key) is str and 0 < len(key) <= MAX_KEY_BYTES and key.isascii()
        problem = None if plain else _key_problem(key)
        if problem is not None:
            shown = key if isinstance(key, str) and key else None
            return _Failure(row, shown, self.key, problem)
        first = self._seen.setdefault(key, row.number)
        if first != row.number:
            return _Failure(row, key, self.key, f"duplicate key: first seen at row {first}")
        instance: dict[str, Any] = {self.key: key}
        text = row.text
        for name, dtype in self._features:
            if name not in values:
                return _Failure(row, key, name, f"no {name!r} column: the model needs it")
            try:
                instance[name] = _convert(values[name], dtype, text)
            except _BadValueError as error:
                return _Failure(row, key, name, str(error))
        return _Item(row, key, instance)


def _score(
    servable: Servable, items: list[_Item]
) -> tuple[list[tuple[_Item, dict[str, Any]]], list[_Failure]]:
    """Score ``items``; the rows the rules or the model refuse come back as failures."""
    pending = list(items)
    failed: list[_Failure] = []
    while pending:
        try:
            columns = request_rules.columns([item.instance for item in pending], servable.inputs)
            break
        except request_rules.RequestError as error:
            index = error.instance
            if index is None or not 0 <= index < len(pending):
                if len(pending) == 1:
                    index = 0
                else:
                    middle = len(pending) // 2
                    return _combine(
                        _score(servable, pending[:middle]),
                        _score(servable, pending[middle:]),
                        failed,
                    )
            item = pending.pop(index)
            failed.append(_Failure(item.row, item.key, error.field or "", error.message))
    else:
        return [], failed
    try:
        outputs = servable.predict_columns(columns)
    except _MODEL_ERRORS as error:
        if len(pending) == 1:
            item = pending[0]
            message = getattr(error, "message", None) or str(error)
            failed.append(_Failure(item.row, item.key, "", f"the model refused the row: {message}"))
            return [], failed
        middle = len(pending) // 2
        return _combine(
            _score(servable, pending[:middle]), _score(servable, pending[middle:]), failed
        )
    return list(zip(pending, outputs, strict=True)), failed


def _combine(
    left: tuple[list[tuple[_Item, dict[str, Any]]], list[_Failure]],
    right: tuple[list[tuple[_Item, dict[str, Any]]], list[_Failure]],
    failed: list[_Failure],
) -> tuple[list[tuple[_Item, dict[str, Any]]], list[_Failure]]:
    return left[0] + right[0], failed + left[1] + right[1]


def _chunks(rows: Iterator[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    chunk: list[SourceRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Batch:
    """One batch's writes: predictions, errors and the optional sink."""

    def __init__(
        self,
        *,
        client: bigquery.Client,
        artifacts: ArtifactStore,
        predictions: bigquery.Table,
        errors: bigquery.Table,
        dataset: str,
        version: str,
        key: str,
        batch_id: str,
        sink: PredictionSink | None,
        now: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._artifacts = artifacts
        self._predictions = predictions
        self._errors = errors
        self._dataset = dataset
        self._version = version
        self._key = key
        self._batch_id = batch_id
        self._sink = sink
        self._now = now
        self.scored = self.failed = self.stored = 0
        self._pending: list[dict[str, Any]] = []
        self._pending_errors: list[dict[str, Any]] = []
        self._parts = 0

    def write(self, scored: list[tuple[_Item, dict[str, Any]]], failed: list[_Failure]) -> None:
        at = _timestamp(self._now())
        rows: list[dict[str, Any]] = []
        answers: list[tuple[str, dict[str, Any]]] = []
        for item, outputs in scored:
            prediction = outputs  # the model's fresh dict for this row: the key comes out
            if prediction.pop(self._key, None) != item.key:
                failed.append(
                    _Failure(item.row, item.key, "", "the model did not pass the key through")
                )
                continue
            try:
                text = JsonText(_ANSWER_JSON.encode(prediction))
            except ValueError:
                failed.append(
                    _Failure(
                        item.row,
                        item.key,
                        "",
                        "the model's output is not finite (NaN or "
                        "infinity), which BigQuery's JSON cannot hold",
                    )
                )
                continue
            rows.append(
                {
                    "key": item.key,
                    "model_version": self._version,
                    "predicted_at": at,
                    "batch_id": self._batch_id,
                    "prediction": text,
                }
            )
            answers.append((item.key, prediction))
        self._pending.extend(rows)
        if self._sink is not None and answers:
            self.stored += self._sink.write(self._dataset, self._version, answers)
        self._pending_errors.extend(self._error_row(failure, at) for failure in failed)
        self.scored += len(rows)
        self.failed += len(failed)
        if len(self._pending) + len(self._pending_errors) >= LOAD_ROWS:
            self.flush()

    def flush(self) -> None:
        """Load what is pending: one load job per table per part, named after the batch
        and the part (a retried batch reuses the names: BigQuery loads each part once)."""
        part = self._parts
        self._parts += 1
        marker = part_name(self._dataset, self._batch_id, part)
        if self._artifacts.read(marker) is None:  # not loaded by an earlier attempt
            job = f"cascade_batch_{self._batch_id}_p{part}"
            load_rows(self._client, self._predictions, self._pending, job_id=job)
            load_rows(self._client, self._errors, self._pending_errors, job_id=f"{job}_errors")
            # The local BigQuery names load jobs itself (no 409 for a repeated id): this
            # create-only marker is what keeps a retried part from loading twice there.
            self._artifacts.create(marker, json.dumps({"load_job": job}).encode())
        self._pending, self._pending_errors = [], []

    def _error_row(self, failure: _Failure, at: str) -> dict[str, Any]:
        return {
            "key": None if failure.key is None else _valid_text(failure.key)[:SHOWN_CHARS],
            "row_number": failure.row.number,
            "source": failure.row.origin[:SHOWN_CHARS],
            "field": _valid_text(failure.field)[:SHOWN_CHARS],
            "reason": _valid_text(failure.reason)[:SHOWN_CHARS],
            "model_version": self._version,
            "batch_id": self._batch_id,
            "recorded_at": at,
        }


def _valid_text(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector, run less often while a batch scores.

    Scoring makes a few dicts per row and keeps none of them; with the default threshold
    (a collection every 700 new objects) the collector runs every few rows and each run
    walks every live object, TensorFlow's and the model's included: 80% of a batch's
    time in ``bench/serving_modes.py`` before this. Every 50,000 objects it costs little,
    and the memory it can hold back is a few megabytes. The old thresholds come back on
    the way out, whatever happens."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def score_source(
    *,
    source: InstanceSource,
    servable: Servable,
    dataset: str,
    client: bigquery.Client,
    artifacts: ArtifactStore,
    project: str,
    bq_dataset: str = PREDICTIONS_DATASET,
    chunk_rows: int = CHUNK_ROWS,
    sink: PredictionSink | None = None,
    now: Callable[[], datetime] = _utc_now,
) -> BatchResult:
    """Score every row of ``source`` with ``servable`` (the model version ``dataset``
    deployed as ``servable.version``) into the version's predictions and errors tables;
    skip the batch when its manifest says it already ran."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    version = servable.version
    preparer = _Preparer(servable)
    batch_id = batch_id_for(dataset, version, source.identity)
    name = manifest_name(dataset, batch_id)
    done = artifacts.read_model(name, BatchManifest)
    if done is not None:
        return BatchResult(done[0], skipped=True)
    started = now()
    predictions_table, errors_table = output_tables(
        project, dataset, version, bq_dataset=bq_dataset
    )
    batch = _Batch(
        client=client,
        artifacts=artifacts,
        predictions=ensure_table(client, predictions_table, PREDICTIONS_SCHEMA),
        errors=ensure_table(client, errors_table, ERRORS_SCHEMA),
        dataset=dataset,
        version=version,
        key=preparer.key,
        batch_id=batch_id,
        sink=sink,
        now=now,
    )
    read = 0
    with _fewer_collections():
        for chunk in _chunks(source.rows(), chunk_rows):
            read += len(chunk)
            items: list[_Item] = []
            failed: list[_Failure] = []
            for row in chunk:
                prepared = preparer.prepare(row)
                if isinstance(prepared, _Item):
                    items.append(prepared)
                else:
                    failed.append(prepared)
            scored, refused = _score(servable, items) if items else ([], [])
            batch.write(scored, failed + refused)
        batch.flush()
    manifest = BatchManifest(
        batch_id=batch_id,
        dataset=dataset,
        model_version=version,
        source=source.uri,
        source_identity=source.identity,
        predictions_table=predictions_table,
        errors_table=errors_table,
        rows_read=read,
        rows_scored=batch.scored,
        rows_failed=batch.failed,
        rows_stored=batch.stored,
        started_at=started,
        finished_at=now(),
    )
    if artifacts.create(name, manifest.model_dump_json(indent=2).encode()) is None:
        found = artifacts.read_model(name, BatchManifest)
        if found is not None:  # a concurrent run of the same batch finished first
            return BatchResult(found[0], skipped=True)
    return BatchResult(manifest, skipped=False)


def summary(manifest: BatchManifest) -> Mapping[str, Any]:
    """The manifest as printed by the CLI and the task."""
    return manifest.model_dump(mode="json")
