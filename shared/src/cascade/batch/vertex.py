"""Batch prediction on Vertex AI: the ``BatchPredictionJob`` request, built with the
client library's own types (``google.cloud.aiplatform_v1``), and its submission.

There is no Vertex AI emulator, so the request is asserted exactly in the unit tests (a
``create_autospec`` of ``JobServiceClient``) against what Google documents. Sources
checked (Dec 2026):

- REST reference, ``projects.locations.batchPredictionJobs``
  (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.batchPredictionJobs):
  ``model`` may carry a version (``projects/{p}/locations/{l}/models/{m}@2``);
  ``inputConfig`` is ``instancesFormat`` plus ``bigquerySource.inputUri``
  (``bq://project.dataset.table``) or ``gcsSource.uris``; ``outputConfig`` is
  ``predictionsFormat`` plus ``bigqueryDestination.outputUri`` (``bq://project`` or
  ``bq://project.dataset``: Vertex AI writes tables ``predictions_<time>`` and
  ``errors_<time>`` in it) or ``gcsDestination``.
- The proto docs of ``BatchPredictionJob.InstanceConfig`` (aiplatform_v1 2.7.0):
  ``instance_type="object"`` turns each BigQuery row / JSONL line into a JSON object
  (the TensorFlow serving signature takes named inputs); ``included_fields`` keeps only
  the model's inputs, so extra table columns never reach the model. ``key_field`` is
  not used: it removes the key from the instance and, per the issue's finding, BigQuery
  output does not support it; the key is one of the model's inputs and comes back as
  one of its outputs (the serving signature passes it through).
- Google's sample ``create_batch_prediction_job_bigquery_sample.py``
  (googleapis/python-aiplatform, samples/snippets): regional endpoint
  ``{region}-aiplatform.googleapis.com``, ``create_batch_prediction_job(parent=
  "projects/{p}/locations/{l}", batch_prediction_job=...)``, instances and predictions
  format ``bigquery``.
- Supported input formats: ``jsonl``, ``csv``, ``tf-record``, ``tf-record-gzip``,
  ``file-list``, ``bigquery`` — not Parquet. CSV rows reach the model as arrays
  (``instance_type`` does not apply to csv), which a signature of named inputs refuses.
  So the cloud path takes a BigQuery table or JSONL files and refuses the rest up front;
  local scoring also reads CSV and Parquet (a documented difference).

Idempotency: every job carries the batch id as a label; ``submit_batch_prediction_job``
lists jobs with that label first and returns an existing one instead of creating a
second (a redelivered message, a retried step).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.cloud import aiplatform_v1 as vertex

from cascade.batch.collect import VertexBatchOutput
from cascade.core.errors import BadInputError, InvalidConfigError
from cascade.core.settings import Settings
from cascade.core.warehouse_names import table_id

__all__ = [
    "BATCH_ID_LABEL",
    "DATASET_LABEL",
    "ENDED_WITHOUT_OUTPUT",
    "SUCCEEDED",
    "VERSION_LABEL",
    "BatchResources",
    "batch_prediction_job",
    "cascade_batch_jobs",
    "job_service_client",
    "scored_source",
    "submit_batch_prediction_job",
    "vertex_output",
]

BATCH_ID_LABEL = "cascade_batch_id"
DATASET_LABEL = "cascade_dataset"
VERSION_LABEL = "cascade_model_version"
SUCCEEDED = frozenset(
    {vertex.JobState.JOB_STATE_SUCCEEDED, vertex.JobState.JOB_STATE_PARTIALLY_SUCCEEDED}
)
"""End states with output to collect (partially: some rows failed, in ``errors_<time>``)."""
ENDED_WITHOUT_OUTPUT = frozenset(
    {
        vertex.JobState.JOB_STATE_FAILED,
        vertex.JobState.JOB_STATE_CANCELLED,
        vertex.JobState.JOB_STATE_EXPIRED,
    }
)
_GCS_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_NOT_LABEL = re.compile(r"[^a-z0-9_-]")


@dataclass(frozen=True)
class BatchResources:
    """The machines Vertex AI scores on (``dedicatedResources``)."""

    machine_type: str = "n1-standard-4"
    starting_replica_count: int = 1
    max_replica_count: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.starting_replica_count <= self.max_replica_count:
            raise InvalidConfigError(
                "replica counts: 1 <= starting_replica_count <= max_replica_count"
            )


def _label(value: str) -> str:
    return _NOT_LABEL.sub("_", value.lower())[:63]


def _bq_uri(table: str) -> str:
    parts = table.split(".")
    if len(parts) != 3:
        raise InvalidConfigError(f"not a project.dataset.table name: {table!r}")
    return f"bq://{table_id(*parts)}"


def _input_config(table: str | None, files: Sequence[str]) -> vertex.BatchPredictionJob.InputConfig:
    if (table is None) == (not files):
        raise InvalidConfigError("score either a BigQuery table or Cloud Storage files")
    if table is not None:
        return vertex.BatchPredictionJob.InputConfig(
            instances_format="bigquery",
            bigquery_source=vertex.BigQuerySource(input_uri=_bq_uri(table)),
        )
    formats = set()
    for uri in files:
        if not uri.startswith("gs://"):
            raise InvalidConfigError(f"Vertex AI reads gs:// URIs, not {uri!r}")
        suffix = next((s for s in _GCS_FORMATS if uri.lower().endswith(s)), None)
        if suffix is None:
            raise InvalidConfigError(
                f"{uri}: Vertex AI batch prediction reads JSONL files here: Parquet is not "
                "one of its instance formats, and CSV rows reach the model as arrays, "
                "which a signature of named inputs refuses (instance_type does not apply "
                "to csv)"
            )
        formats.add(_GCS_FORMATS[suffix])
    if len(formats) != 1:
        raise InvalidConfigError("one batch takes files of one format")
    return vertex.BatchPredictionJob.InputConfig(
        instances_format=formats.pop(), gcs_source=vertex.GcsSource(uris=list(files))
    )


def batch_prediction_job(
    *,
    dataset: str,
    version: str,
    vertex_model: str | None,
    batch_id: str,
    inputs: Sequence[str],
    output_project: str,
    output_dataset: str,
    settings: Settings,
    table: str | None = None,
    files: Sequence[str] = (),
    resources: BatchResources | None = None,
) -> vertex.BatchPredictionJob:
    """The ``BatchPredictionJob`` that scores ``table`` (``project.dataset.table``) or
    ``files`` (``gs://`` JSONL) with ``vertex_model`` (the deployed version's model
    resource name with ``@version``) into ``bq://output_project.output_dataset``.
    ``inputs`` are the model's signature inputs, the key included."""
    if not vertex_model:
        raise InvalidConfigError(
            f"version {version} of {dataset} has no Vertex AI model (deployed locally?)"
        )
    if not settings.jobs_service_account:
        raise InvalidConfigError("CASCADE_JOBS_SERVICE_ACCOUNT is not set: jobs need an identity")
    if not inputs:
        raise InvalidConfigError("the model's inputs are needed (included_fields)")
    resources = resources or BatchResources()
    table_id(output_project, output_dataset, "predictions")  # checks both names
    return vertex.BatchPredictionJob(
        display_name=f"cascade-batch-{dataset}-v{version}-{batch_id[:12]}",
        model=vertex_model,
        input_config=_input_config(table, files),
        instance_config=vertex.BatchPredictionJob.InstanceConfig(
            instance_type="object", included_fields=sorted(inputs)
        ),
        output_config=vertex.BatchPredictionJob.OutputConfig(
            predictions_format="bigquery",
            bigquery_destination=vertex.BigQueryDestination(
                output_uri=f"bq://{output_project}.{output_dataset}"
            ),
        ),
        dedicated_resources=vertex.BatchDedicatedResources(
            machine_spec=vertex.MachineSpec(machine_type=resources.machine_type),
            starting_replica_count=resources.starting_replica_count,
            max_replica_count=resources.max_replica_count,
        ),
        service_account=settings.jobs_service_account,
        labels={
            DATASET_LABEL: _label(dataset),
            VERSION_LABEL: _label(version),
            BATCH_ID_LABEL: _label(batch_id),
        },
    )


def job_service_client(settings: Settings) -> vertex.JobServiceClient:
    """The regional JobService endpoint (Vertex AI requires regional endpoints)."""
    endpoint = f"{settings.region}-aiplatform.googleapis.com"
    return vertex.JobServiceClient(client_options={"api_endpoint": endpoint})


def submit_batch_prediction_job(
    client: vertex.JobServiceClient,
    settings: Settings,
    job: vertex.BatchPredictionJob,
    *,
    on_existing: Callable[[vertex.BatchPredictionJob], None] | None = None,
) -> str:
    """Create ``job`` unless a job with its batch-id label exists; the job's name."""
    parent = f"projects/{settings.project}/locations/{settings.region}"
    batch_id = job.labels[BATCH_ID_LABEL]
    for existing in client.list_batch_prediction_jobs(
        request=vertex.ListBatchPredictionJobsRequest(
            parent=parent, filter=f'labels.{BATCH_ID_LABEL}="{batch_id}"'
        )
    ):
        if existing.state != vertex.JobState.JOB_STATE_FAILED:
            if on_existing is not None:
                on_existing(existing)
            return str(existing.name)
    created = client.create_batch_prediction_job(parent=parent, batch_prediction_job=job)
    return str(created.name)


def cascade_batch_jobs(
    client: vertex.JobServiceClient, settings: Settings, *, created_after: datetime
) -> list[vertex.BatchPredictionJob]:
    """Cascade's batch prediction jobs (those with a batch-id label) created after
    ``created_after``, in any state (the list filter's fields: labels and create_time)."""
    after = created_after.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return list(
        client.list_batch_prediction_jobs(
            request=vertex.ListBatchPredictionJobsRequest(
                parent=f"projects/{settings.project}/locations/{settings.region}",
                filter=f'labels.{BATCH_ID_LABEL}:* AND create_time>"{after}"',
            )
        )
    )


def scored_source(job: vertex.BatchPredictionJob) -> str:
    """What the job scored: ``bq://project.dataset.table`` or its ``gs://`` files."""
    config = job.input_config
    if config.bigquery_source.input_uri:
        return str(config.bigquery_source.input_uri)
    return ",".join(sorted(config.gcs_source.uris))


def vertex_output(job: vertex.BatchPredictionJob, *, key: str) -> VertexBatchOutput:
    """The collection of a succeeded job: its labels name the dataset, version and batch,
    its ``output_info`` the tables Vertex AI wrote. ``BadInputError`` for a job that
    does not carry them (not Cascade's, or edited)."""
    labels = dict(job.labels)
    missing = [
        label for label in (DATASET_LABEL, VERSION_LABEL, BATCH_ID_LABEL) if label not in labels
    ]
    if missing:
        raise BadInputError(f"{job.name}: no {', '.join(missing)} label")
    info = job.output_info
    dataset_uri = str(info.bigquery_output_dataset)
    if not dataset_uri.startswith("bq://") or not info.bigquery_output_table:
        raise BadInputError(f"{job.name}: Vertex AI reports no BigQuery output")
    started = job.start_time if job.start_time else None
    return VertexBatchOutput(
        job=str(job.name),
        dataset=labels[DATASET_LABEL],
        version=labels[VERSION_LABEL],
        batch_id=labels[BATCH_ID_LABEL],
        source=scored_source(job),
        output_dataset=dataset_uri.removeprefix("bq://"),
        output_table=str(info.bigquery_output_table),
        key=key,
        started_at=started,
    )
