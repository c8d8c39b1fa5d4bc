"""Collect a finished Vertex AI batch prediction job into Cascade's tables and store.

On Google Cloud a batch is scored by a Vertex AI ``BatchPredictionJob``
(``cascade.batch.vertex``), which writes its own tables into the predictions dataset:
``predictions_<time>`` (the instance columns and a ``prediction`` column) and
``errors_<time>`` (the instance columns and an ``errors`` STRUCT of ``code`` and
``message``). Locally the scoring task writes Cascade's tables directly
(``cascade.batch.scoring``). Collection makes the cloud end the same as the local one:

- the job's successful rows go to the version's table ``<dataset>_v<version>``
  (``cascade.batch.tables``): ``key`` (the model's passthrough key input), the model
  version, the time, the batch id and ``prediction`` (the model's outputs without the
  key, as JSON). A row the local scoring would refuse is refused here too and recorded
  in ``<dataset>_v<version>_errors`` with its reason (``row_number``: the row's place in
  Vertex AI's output, ordered by key; Vertex AI's failed rows are numbered after
  them): a null, empty or over-long key,
  a prediction that is not a JSON object, a key the model did not pass through, a
  key seen before in the batch (one answer per key per batch). Vertex AI's own failed
  rows join them with Vertex AI's message;
- a static or hybrid dataset's still-deployed version gets its answers (the newest per
  key) loaded into the precomputed store (``cascade.batch.reload.reload_version``);
- the batch's manifest ``models/<dataset>/batch-predictions/<batch id>.json`` is written
  create-only last: its existence means the batch is done.

All of it runs inside BigQuery (two ``INSERT ... SELECT`` jobs), so no row passes through
the function. Each job is named after the batch (``cascade_collect_<batch id>_p`` and
``_e``): BigQuery runs a job id once, so a collection retried after a crash inserts
nothing twice; where the job id is not enforced (the local BigQuery) a create-only
marker per job in the artifacts bucket does the same, as for scoring's loads.

The Vertex AI output's ``prediction`` column is read whatever type Vertex AI gave it:
a STRING of JSON text, a JSON value, or a STRUCT (a model with a prediction schema).
"""

# ruff: noqa: S608 - the SQL here names only checked tables and columns (VertexBatchOutput,
# table_id); every value is a query parameter.

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google.cloud.bigquery as bigquery
from google.api_core import exceptions as gexc

from cascade.batch.tables import (
    ERRORS_SCHEMA,
    MAX_KEY_BYTES,
    PREDICTIONS_SCHEMA,
    SHOWN_CHARS,
    BatchManifest,
    ensure_table,
    manifest_name,
    output_tables,
)
from cascade.core.errors import BadInputError
from cascade.core.settings import DATASET_NAME_PATTERN
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import table_id

__all__ = [
    "MAX_KEY_BYTES",
    "CollectedBatch",
    "VertexBatchOutput",
    "collect_vertex_output",
    "errors_query",
    "predictions_query",
]

_log = logging.getLogger("cascade.batch.collect")

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_OUTPUT_TABLE = re.compile(r"^predictions_[A-Za-z0-9_]{1,200}$")
_BATCH_ID = re.compile(r"^[0-9a-f]{32}$")
_VERSION = re.compile(r"^[0-9]{1,9}$")


@dataclass(frozen=True)
class VertexBatchOutput:
    """What collection needs of one succeeded ``BatchPredictionJob``."""

    job: str
    """The job's resource name."""
    dataset: str
    version: str
    batch_id: str
    source: str
    """What was scored: ``bq://project.dataset.table`` or the ``gs://`` files."""
    output_dataset: str
    """``project.dataset`` (``outputInfo.bigqueryOutputDataset`` without ``bq://``)."""
    output_table: str
    """``predictions_<time>`` (``outputInfo.bigqueryOutputTable``)."""
    key: str
    """The model's passthrough key input: a column of the output table."""
    started_at: datetime | None = None

    def __post_init__(self) -> None:
        if not DATASET_NAME_PATTERN.fullmatch(self.dataset):
            raise BadInputError(f"{self.job}: not a dataset name: {self.dataset!r}")
        if not _VERSION.fullmatch(self.version):
            raise BadInputError(f"{self.job}: not a model version: {self.version!r}")
        if not _BATCH_ID.fullmatch(self.batch_id):
            raise BadInputError(f"{self.job}: not a batch id: {self.batch_id!r}")
        if not _OUTPUT_TABLE.fullmatch(self.output_table):
            raise BadInputError(f"{self.job}: not a Vertex AI output table: {self.output_table!r}")
        if not _COLUMN.fullmatch(self.key):
            raise BadInputError(f"{self.job}: the key {self.key!r} is not a BigQuery column name")
        project, _, name = self.output_dataset.partition(".")
        table_id(project, name, self.output_table)  # checks the names

    @property
    def predictions(self) -> str:
        return f"{self.output_dataset}.{self.output_table}"

    @property
    def errors(self) -> str:
        return f"{self.output_dataset}.errors_{self.output_table.removeprefix('predictions_')}"


@dataclass(frozen=True)
class CollectedBatch:
    manifest: BatchManifest
    skipped: bool
    """True when the batch was collected before (its manifest existed)."""


def _answer_expression(field: bigquery.SchemaField) -> str:
    """The ``prediction`` column as a JSON value, whatever type Vertex AI gave it."""
    kind = field.field_type.upper()
    if kind in ("RECORD", "STRUCT"):
        return "TO_JSON(prediction)"
    if kind == "JSON":
        return "prediction"
    if kind == "STRING":
        return "SAFE.PARSE_JSON(prediction)"
    raise BadInputError(
        f"the Vertex AI output's prediction column is {field.field_type}: expected STRING, "
        "JSON or a STRUCT"
    )


def _rows(output: VertexBatchOutput, answer: str) -> str:
    """Every output row with its key as text, its answer as JSON, its number in the
    output and its rank among the rows of the same key."""
    key = f"CAST(`{output.key}` AS STRING)"
    return (
        f"SELECT {key} AS key, {answer} AS answer, "
        f"ROW_NUMBER() OVER (ORDER BY {key}, TO_JSON_STRING({answer})) AS row_number, "
        f"ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY TO_JSON_STRING({answer})) AS seen "
        f"FROM `{output.predictions}`"
    )


def _reason(key: str) -> str:
    """Why a row is refused (NULL: it is not), in the order the local scoring checks."""
    return (
        "CASE "
        "WHEN key IS NULL THEN 'the key is null' "
        "WHEN key = '' THEN 'the key is empty' "
        f"WHEN BYTE_LENGTH(key) > {MAX_KEY_BYTES} THEN "
        f"'the key is over the {MAX_KEY_BYTES}-byte limit' "
        "WHEN answer IS NULL THEN 'the prediction is not JSON' "
        f"WHEN JSON_QUERY(answer, '$.{key}') IS NULL THEN "
        "'the prediction is not an object holding the key' "
        f"WHEN JSON_VALUE(answer, '$.{key}') IS NULL "
        f"OR JSON_VALUE(answer, '$.{key}') != key THEN "
        "'the model did not pass the key through' "
        "WHEN seen > 1 THEN 'duplicate key: one prediction per key per batch' "
        "END"
    )


def predictions_query(output: VertexBatchOutput, field: bigquery.SchemaField, target: str) -> str:
    """The INSERT of the accepted rows into ``target`` (a checked table id)."""
    answer = _answer_expression(field)
    return (
        f"INSERT INTO `{target}` (key, model_version, predicted_at, batch_id, prediction) "
        f"SELECT key, @version, @at, @batch_id, JSON_REMOVE(answer, '$.{output.key}') "
        f"FROM ({_rows(output, answer)}) "
        f"WHERE ({_reason(output.key)}) IS NULL"
    )


def errors_query(
    output: VertexBatchOutput,
    field: bigquery.SchemaField,
    target: str,
    *,
    vertex_errors: bool,
) -> str:
    """The INSERT of the refused rows, and of Vertex AI's failed ones, into ``target``."""
    answer = _answer_expression(field)
    refused = (
        f"SELECT LEFT(key, {SHOWN_CHARS}) AS key, row_number, "
        f"IF(STARTS_WITH(reason, 'the key') OR STARTS_WITH(reason, 'duplicate'), "
        f"'{output.key}', '') AS field, reason "
        f"FROM (SELECT *, {_reason(output.key)} AS reason FROM ({_rows(output, answer)})) "
        "WHERE reason IS NOT NULL"
    )
    failed = (
        f"SELECT LEFT(CAST(`{output.key}` AS STRING), {SHOWN_CHARS}) AS key, "
        f"(SELECT COUNT(*) FROM `{output.predictions}`) "
        f"+ ROW_NUMBER() OVER (ORDER BY CAST(`{output.key}` AS STRING)) AS row_number, "
        "'' AS field, "
        f"LEFT(CONCAT('Vertex AI: ', COALESCE(errors.message, 'no message')), {SHOWN_CHARS}) "
        f"AS reason FROM `{output.errors}`"
    )
    rows = f"{refused} UNION ALL {failed}" if vertex_errors else refused
    return (
        f"INSERT INTO `{target}` (key, row_number, source, field, reason, model_version, "
        "batch_id, recorded_at) "
        "SELECT key, row_number, @source, field, reason, @version, @batch_id, @at "
        f"FROM ({rows})"
    )


def _count(client: bigquery.Client, table: str) -> int:
    rows = list(client.query(f"SELECT COUNT(*) AS n FROM `{table}`").result())
    return int(rows[0]["n"])


class _Collection:
    """One collection's DML jobs, each run once (job id, and a marker where the local
    BigQuery does not enforce job ids)."""

    def __init__(
        self,
        client: bigquery.Client,
        artifacts: ArtifactStore,
        output: VertexBatchOutput,
        parameters: list[bigquery.ScalarQueryParameter],
    ) -> None:
        self._client = client
        self._artifacts = artifacts
        self._output = output
        self._parameters = parameters

    def run(self, suffix: str, sql: str) -> int:
        """Rows the named DML job inserted (this time or when it first ran)."""
        job_id = f"cascade_collect_{self._output.batch_id}_{suffix}"
        marker = (
            f"models/{self._output.dataset}/batch-predictions/{self._output.batch_id}/{job_id}.json"
        )
        found = self._artifacts.read(marker)
        if found is not None:
            return int(json.loads(found.data)["rows"])
        config = bigquery.QueryJobConfig(query_parameters=self._parameters)
        job: Any
        try:
            job = self._client.query(sql, job_config=config, job_id=job_id, job_retry=None)
            job.result()
        except gexc.Conflict:  # ran before (a retried collection): its count stands
            job = self._client.get_job(job_id)
            job.result()
        rows = int(getattr(job, "num_dml_affected_rows", None) or 0)
        self._artifacts.create(marker, json.dumps({"job": job_id, "rows": rows}).encode())
        return rows


def collect_vertex_output(
    output: VertexBatchOutput,
    *,
    client: bigquery.Client,
    artifacts: ArtifactStore,
    project: str,
    bq_dataset: str,
    load_store: Callable[[str, str], int | None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CollectedBatch:
    """Copy ``output`` into the version's tables, load the store (``load_store(dataset,
    version)``: answers written, None when nothing was loaded), write the manifest."""
    name = manifest_name(output.dataset, output.batch_id)
    done = artifacts.read_model(name, BatchManifest)
    if done is not None:
        return CollectedBatch(done[0], skipped=True)
    started = now()
    schema = {field.name: field for field in client.get_table(output.predictions).schema}
    for column in (output.key, "prediction"):
        if column not in schema:
            raise BadInputError(
                f"{output.predictions} has no {column!r} column: not the output of a model "
                "with Cascade's signature (the key passed through)"
            )
    has_errors = _exists(client, output.errors)
    predictions, errors = output_tables(
        project, output.dataset, output.version, bq_dataset=bq_dataset
    )
    ensure_table(client, predictions, PREDICTIONS_SCHEMA)
    ensure_table(client, errors, ERRORS_SCHEMA)
    collection = _Collection(
        client,
        artifacts,
        output,
        [
            bigquery.ScalarQueryParameter("version", "STRING", output.version),
            bigquery.ScalarQueryParameter("batch_id", "STRING", output.batch_id),
            bigquery.ScalarQueryParameter("source", "STRING", output.source[:SHOWN_CHARS]),
            bigquery.ScalarQueryParameter("at", "TIMESTAMP", started),
        ],
    )
    field = schema["prediction"]
    scored = collection.run("p", predictions_query(output, field, predictions))
    failed = collection.run("e", errors_query(output, field, errors, vertex_errors=has_errors))
    read = _count(client, output.predictions) + (_count(client, output.errors) if has_errors else 0)
    stored = load_store(output.dataset, output.version) if load_store is not None else None
    manifest = BatchManifest(
        batch_id=output.batch_id,
        dataset=output.dataset,
        model_version=output.version,
        source=output.source,
        source_identity=f"vertex:{output.job}",
        predictions_table=predictions,
        errors_table=errors,
        rows_read=read,
        rows_scored=scored,
        rows_failed=failed,
        rows_stored=stored or 0,
        started_at=output.started_at or started,
        finished_at=now(),
    )
    if artifacts.create(name, manifest.model_dump_json(indent=2).encode()) is None:
        found = artifacts.read_model(name, BatchManifest)
        if found is not None:  # a concurrent collection finished first
            return CollectedBatch(found[0], skipped=True)
    _log.info(
        "%s v%s: collected %s: %d scored, %d refused, %d stored",
        output.dataset,
        output.version,
        output.job,
        scored,
        failed,
        stored or 0,
    )
    return CollectedBatch(manifest, skipped=False)


def _exists(client: bigquery.Client, table: str) -> bool:
    try:
        client.get_table(table)
    except gexc.NotFound:
        return False
    return True
