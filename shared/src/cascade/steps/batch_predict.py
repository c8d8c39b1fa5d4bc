"""batch-predict: score a table or files with a deployed model version, as a job.

A ``BatchPredictRequest`` (from a user, a schedule, or the deploy step after it promoted
a version of a static or hybrid dataset) names the dataset, optionally the version
(default: the one serving most of the traffic) and the source (default: the dataset's
``serving.batch_source``). The function does no scoring itself (no model is loaded
here): on Google Cloud it submits a Vertex AI ``BatchPredictionJob``
(``cascade.batch.vertex``, reused when one with the batch's id exists); locally it
submits the batch to the local job service, which runs ``python -m cascade.batch.task``
as the Vertex AI jobs' account (``cascade.localcloud.batch_executor``). Both are
idempotent by the request id, so a redelivered request submits nothing twice.
"""

from __future__ import annotations

import logging

from cascade.batch.jobs import BatchJobSpec, LocalBatchRunner, batch_id_for
from cascade.batch.vertex import (
    batch_prediction_job,
    job_service_client,
    submit_batch_prediction_job,
)
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError
from cascade.core.messages import BatchPredictRequest
from cascade.core.pipeline_config import load_pipeline_config
from cascade.deploy.smoke import inputs_from_spec, read_transform_spec
from cascade.serving.state import DeployedVersion, read_serving_state

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
    source = f"bq://{spec.table}" if spec.table is not None else ",".join(sorted(spec.files))
    job = batch_prediction_job(
        dataset=spec.dataset,
        version=spec.version,
        vertex_model=deployed.vertex_model,
        batch_id=batch_id_for(spec.dataset, spec.version, f"request:{request_id}:{source}"),
        inputs=sorted(inputs_from_spec(transform)),
        output_project=ctx.settings.project,
        output_dataset=ctx.settings.warehouse_dataset(PREDICTIONS_WAREHOUSE),
        settings=ctx.settings,
        table=spec.table,
        files=spec.files,
    )
    client = job_service_client(ctx.settings)
    try:
        name = submit_batch_prediction_job(client, ctx.settings, job)
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    _log.info("batch %s of %s v%s: %s", request_id, spec.dataset, spec.version, name)
