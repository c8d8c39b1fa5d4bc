"""The batch predictions' tables and records, without TensorFlow: what the scoring task
(``cascade.batch.scoring``) writes and what the collection of a Vertex AI batch
(``cascade.batch.collect``) and the store's reload (``cascade.batch.reload``) read.

Tables (names are data: built with ``table_id``, never from raw input)::

    <project>.<predictions dataset>.<dataset>_v<version>          one row per scored key
    <project>.<predictions dataset>.<dataset>_v<version>_errors   one row per refused row

(``<dataset>`` is ``table_prefix(dataset)``: the name, or for a name with ``-`` or ``_``
the name with ``_`` for ``-`` and a digest, so two datasets never share a table.)
A finished batch has a manifest ``models/<dataset>/batch-predictions/<batch id>.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from datetime import datetime

import google.cloud.bigquery as bigquery
from google.api_core import exceptions as gexc
from pydantic import BaseModel, ConfigDict

from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.core.warehouse import table_id

__all__ = [
    "ERRORS_SCHEMA",
    "MAX_KEY_BYTES",
    "PREDICTIONS_DATASET",
    "PREDICTIONS_SCHEMA",
    "SHOWN_CHARS",
    "BatchManifest",
    "ensure_table",
    "manifest_name",
    "output_tables",
    "part_name",
    "table_prefix",
]

PREDICTIONS_DATASET = "cascade_predictions"
MAX_KEY_BYTES = 1024
"""Longest key (UTF-8 bytes): the precomputed store's limit, so every scored key loads."""
SHOWN_CHARS = 1024
"""How much of a refused row's key and of a reason the errors table keeps."""

PREDICTIONS_SCHEMA = [
    bigquery.SchemaField("key", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("model_version", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("predicted_at", "TIMESTAMP", mode="REQUIRED"),
    bigquery.SchemaField("batch_id", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("prediction", "JSON", mode="REQUIRED"),
]
ERRORS_SCHEMA = [
    bigquery.SchemaField("key", "STRING"),
    bigquery.SchemaField("row_number", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("source", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("field", "STRING"),
    bigquery.SchemaField("reason", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("model_version", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("batch_id", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("recorded_at", "TIMESTAMP", mode="REQUIRED"),
]


class BatchManifest(BaseModel):
    """What a finished batch did; its existence marks the batch done."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: str
    dataset: str
    model_version: str
    source: str
    source_identity: str
    predictions_table: str
    errors_table: str
    rows_read: int
    rows_scored: int
    rows_failed: int
    rows_stored: int = 0
    """Answers also written to the precomputed store."""
    started_at: datetime
    finished_at: datetime


def table_prefix(dataset: str) -> str:
    """A dataset's name in BigQuery table names, never another dataset's: the name itself
    when it holds no ``-`` or ``_``; else with ``-`` written ``_`` and a digest of the
    name (``credit-a`` and ``credit_a`` would otherwise share ``credit_a``: table names
    take letters, digits and ``_`` only)."""
    if "-" not in dataset and "_" not in dataset:
        return dataset
    digest = hashlib.sha256(dataset.encode("utf-8")).hexdigest()[:10]
    return f"{dataset.replace('-', '_')}_{digest}"


def output_tables(
    project: str, dataset: str, version: str, *, bq_dataset: str = PREDICTIONS_DATASET
) -> tuple[str, str]:
    """The predictions table and the errors table of one model version."""
    if not version.isascii() or not version.isdigit():
        raise ValueError(f"invalid model version {version!r}: digits only")
    name = f"{table_prefix(dataset)}_v{version}"
    return table_id(project, bq_dataset, name), table_id(project, bq_dataset, f"{name}_errors")


def manifest_name(dataset: str, batch_id: str) -> str:
    return f"models/{dataset}/batch-predictions/{batch_id}.json"


def part_name(dataset: str, batch_id: str, part: int) -> str:
    """The marker of one loaded part of a batch (its load job's name inside)."""
    return f"models/{dataset}/batch-predictions/{batch_id}/part-{part}.json"


def ensure_table(
    client: bigquery.Client, name: str, schema: Sequence[bigquery.SchemaField]
) -> bigquery.Table:
    # The dataset is Terraform's (the topology's warehouse; the local cloud provisions it):
    # a batch job's account may create tables in it, never datasets.
    project, dataset, _ = name.split(".")
    try:
        client.get_dataset(f"{project}.{dataset}")
    except gexc.NotFound:
        raise InvalidConfigError(
            f"the BigQuery dataset {project}.{dataset} does not exist: Terraform creates the "
            "warehouse's datasets (infra/bigquery.tf), `cascade up` the local ones"
        ) from None
    with contextlib.suppress(gexc.Conflict):
        client.create_table(bigquery.Table(name, schema=list(schema)))
    table = client.get_table(name)
    have = {field.name: (field.field_type, field.mode) for field in table.schema}
    missing = [field.name for field in schema if field.name not in have]
    if missing:
        raise BadInputError(f"table {name} exists without the columns {missing}")
    return table
