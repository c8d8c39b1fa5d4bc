"""batch-predict: score a table or files with a deployed model version, as a job.

A ``BatchPredictRequest`` (from a user, a schedule, or the deploy step after it promoted
a version of a static or hybrid dataset) names the dataset, optionally the version
(default: the one serving most of the traffic) and the source (default: the dataset's
``serving.batch_source``). The function does no scoring itself (no model is loaded
here): on Google Cloud it submits a Vertex AI ``BatchPredictionJob``
(``cascade.batch.vertex``, reused when one with the batch's id exists); locally it
submits the batch to the local job service, which runs ``python -m cascade.batch.task``
as the Vertex AI jobs' account (``cascade.localcloud.batch_executor``). Both are
idempotent by the request id, so a redelivered request submits nothing twice. A Vertex AI
job's output reaches Cascade's tables and the store through the ``batch-collect`` sweep
(``cascade.steps.batch_collect``).

A hybrid dataset with ``serving.head`` precomputes only its most requested keys
(``cascade.batch.head``). Locally the task filters the source itself. Vertex AI scores a
whole table, so here one BigQuery query job first materialises the head's rows of the
source table into ``<project>.<predictions dataset>.<dataset>_head`` and the job scores
that table; an empty head (no traffic logged yet) scores the whole source table, and a
head none of whose keys is in the source submits nothing. Files with a head are refused
on Google Cloud: the head is chosen by a join inside BigQuery, which files are not in.
Before materialising, a job already submitted for the batch is looked for, so a
redelivered request does not replace the head table under a running job.
"""

from __future__ import annotations

import logging

from google.cloud import aiplatform_v1 as vertex

from cascade.batch.head import (
    MaterialisedHead,
    head_table_id,
    log_endpoint,
    materialise_head,
    request_log_table,
)
from cascade.batch.jobs import BatchJobSpec, LocalBatchRunner, batch_id_for
from cascade.batch.vertex import (
    BATCH_ID_LABEL,
    batch_prediction_job,
    job_service_client,
    submit_batch_prediction_job,
)
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.messages import BatchPredictRequest
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.serving_config import HeadConfig
from cascade.core.warehouse import make_bigquery_client
from cascade.deploy.smoke import inputs_from_spec, read_transform_spec
from cascade.serving.state import DeployedVersion, read_serving_state
from cascade.transform.spec import TransformSpec

__all__ = ["PREDICTIONS_WAREHOUSE", "STEP", "batch_spec", "handle_batch_predict_request"]

STEP = "batch-predict"
PREDICTIONS_WAREHOUSE = "predictions"
_log = logging.getLogger("cascade.steps.batch_predict")


def _deployed(ctx: StepContext, message: BatchPredictRequest) -> DeployedVersion:
    found = read_serving_state(ctx.artifacts, message.dataset)
    if found is None:
        raise BadRequestError(f"nothing of {message.dataset!r} is deployed: no model to score")
    state = found[0]
    chosen = state.primary if message.version is None else state.version(message.version)
    if chosen is None:
        known = ", ".join(item.version for item in state.versions) or "none"
        wanted = "a version with traffic" if message.version is None else message.version
        raise BadRequestError(f"{message.dataset!r} has no {wanted} (versions: {known})")
    return chosen


def batch_spec(ctx: StepContext, message: BatchPredictRequest) -> BatchJobSpec:
    """The batch ``message`` asks for: its source, else the dataset's configured one."""
    table, files = message.table, message.files
    if table is None and not files:
        source = load_pipeline_config(ctx.artifacts, message.dataset).serving.batch_source
        if source is None:
            raise BadRequestError(
                f"the request names no table or files, and {message.dataset!r} has no "
                "serving.batch_source in its pipeline config"
            )
        table, files = source.table, source.files
    version = _deployed(ctx, message).version
    return BatchJobSpec(dataset=message.dataset, version=version, table=table, files=files)


def handle_batch_predict_request(
    ctx: StepContext, message: BatchPredictRequest, *, event_id: str
) -> None:
    spec = batch_spec(ctx, message)
    request_id = f"{message.dataset}:{message.request_id or f'message:{event_id}'}"
    if ctx.settings.job_service_url:
        runner = LocalBatchRunner(ctx.settings.job_service_url)
        try:
            job = runner.submit(spec, request_id=request_id)
        finally:
            runner.close()
        _log.info("batch %s of %s v%s: %s", request_id, spec.dataset, spec.version, job.name)
        return
    deployed = _deployed(ctx, message.model_copy(update={"version": spec.version}))
    transform = read_transform_spec(ctx.artifacts, deployed.run_id)
    if transform is None:
        raise BadRequestError(f"version {deployed.version} has no transform spec: its inputs")
    head = load_pipeline_config(ctx.artifacts, spec.dataset).serving.head
    if head is not None and spec.table is None:
        raise BadRequestError(
            f"{spec.dataset!r} has a serving.head, and on Google Cloud a head is scored from "
            "a BigQuery table only: the head's rows are chosen by a query joining the source "
            "table with the request log, and files are not in BigQuery (Vertex AI scores "
            "every line of them). Score a table, or drop serving.head to score the files"
        )
    source = f"bq://{spec.table}" if spec.table is not None else ",".join(sorted(spec.files))
    identity = f"request:{request_id}:{source}"
    if head is not None:
        identity += f"|head:{head.keys}/{head.window_days}d"
    batch_id = batch_id_for(spec.dataset, spec.version, identity)
    output_dataset = ctx.settings.warehouse_dataset(PREDICTIONS_WAREHOUSE)
    head_table = head_table_id(ctx.settings.project, output_dataset, spec.dataset, batch_id)

    def job_on(table: str | None) -> vertex.BatchPredictionJob:
        return batch_prediction_job(
            dataset=spec.dataset,
            version=spec.version,
            vertex_model=deployed.vertex_model,
            batch_id=batch_id,
            inputs=sorted(inputs_from_spec(transform)),
            output_project=ctx.settings.project,
            output_dataset=output_dataset,
            settings=ctx.settings,
            table=table,
            files=spec.files,
        )

    # Built first: a job Vertex AI would refuse is refused before any query runs.
    job = job_on(head_table if head is not None else spec.table)
    client = job_service_client(ctx.settings)
    try:
        if head is not None and spec.table is not None:
            existing = _submitted(client, ctx, batch_id)
            if existing is not None:  # its head table is not replaced under it
                _log.info(
                    "batch %s of %s: already submitted: %s", request_id, spec.dataset, existing
                )
                return
            outcome = _materialise(ctx, spec.dataset, spec.table, head_table, transform, head)
            if outcome.table is None:
                _log.warning(
                    "batch %s of %s v%s: nothing to score: %s",
                    request_id,
                    spec.dataset,
                    spec.version,
                    outcome.reason,
                )
                return
            _log.info(
                "batch %s of %s: scores %s (%s)",
                request_id,
                spec.dataset,
                outcome.table,
                outcome.reason,
            )
            if outcome.table != head_table:
                job = job_on(outcome.table)
        name = submit_batch_prediction_job(client, ctx.settings, job)
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    _log.info("batch %s of %s v%s: %s", request_id, spec.dataset, spec.version, name)


def _submitted(client: vertex.JobServiceClient, ctx: StepContext, batch_id: str) -> str | None:
    """The job already submitted for ``batch_id`` (not failed), as
    ``submit_batch_prediction_job`` finds it: its name, or None."""
    parent = f"projects/{ctx.settings.project}/locations/{ctx.settings.region}"
    for existing in client.list_batch_prediction_jobs(
        request=vertex.ListBatchPredictionJobsRequest(
            parent=parent, filter=f'labels.{BATCH_ID_LABEL}="{batch_id}"'
        )
    ):
        if existing.state != vertex.JobState.JOB_STATE_FAILED:
            return str(existing.name)
    return None


def _materialise(
    ctx: StepContext,
    dataset: str,
    table: str,
    head_table: str,
    transform: TransformSpec,
    head: HeadConfig,
) -> MaterialisedHead:
    """The head's rows of ``table`` in ``head_table`` (one query job), keyed by the
    deployed version's key input (what the model server logs each key under)."""
    client = make_bigquery_client(ctx.settings)
    try:
        return materialise_head(
            client,
            source_table=table,
            head_table=head_table,
            log_table=request_log_table(ctx.settings),
            key_column=transform.passthrough_key or "key",
            config=head,
            endpoint=log_endpoint(ctx.artifacts, dataset),
            now=ctx.clock(),
        )
    finally:
        client.close()  # type: ignore[no-untyped-call]
