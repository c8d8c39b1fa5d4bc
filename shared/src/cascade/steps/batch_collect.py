"""batch-collect: bring finished Vertex AI batch prediction jobs into Cascade's tables.

Vertex AI announces no end of a batch prediction job on any topic (the job-events log
sink forwards the ends of training and tuning jobs), so the ``batch-collect`` function
sweeps on a schedule (``schedules.batch-collect``): it lists Cascade's batch jobs (those
labelled with a batch id, created within ``lookback_s``) and, for each one that

- **succeeded** (fully or partially) and has no manifest yet: collects its output into
  the version's predictions and errors tables and, for a static or hybrid dataset whose
  version is still deployed, loads the answers into the precomputed store
  (``cascade.batch.collect``), then writes the manifest;
- **failed, was cancelled or expired**: records the end once
  (``models/<dataset>/batch-predictions/<batch id>/ended-<job id>.json``, create-only)
  and raises one alert with Vertex AI's error. A request for the same batch later
  submits a new job (``submit_batch_prediction_job`` reuses any job but a failed one);
- is still running: is looked at again by the next sweep.

Each sweep, locally too, first drops from the precomputed store the answers of every
version ``serving.json`` no longer deploys (retired, rolled back), once per version
(``drop_undeployed_answers``): the model server never reads them again.

One job's failure does not stop the others; a sweep is never retried (the next tick
sweeps again) and two overlapping sweeps are harmless (every write is create-only or
a once-only BigQuery job, and dropping a version twice drops nothing more). Locally
there is nothing to collect: the local job service's scoring task writes Cascade's
tables itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal

import google.cloud.bigquery as bigquery
from google.cloud import aiplatform_v1 as vertex

from cascade.batch.collect import collect_vertex_output
from cascade.batch.reload import PREDICTIONS_WAREHOUSE, RELOADED_MODES, reload_version
from cascade.batch.vertex import (
    BATCH_ID_LABEL,
    DATASET_LABEL,
    ENDED_WITHOUT_OUTPUT,
    SUCCEEDED,
    VERSION_LABEL,
    cascade_batch_jobs,
    job_service_client,
    vertex_output,
)
from cascade.core.context import StepContext
from cascade.core.errors import BadInputError
from cascade.core.events import PubSubEnvelope, decode_message
from cascade.core.messages import Alert, BatchCollectRequest
from cascade.core.settings import DATASET_NAME_PATTERN
from cascade.core.warehouse import make_bigquery_client
from cascade.deploy.smoke import read_transform_spec
from cascade.serving.precomputed import PrecomputedSettings, PrecomputedStore, store_factory
from cascade.serving.state import DEPLOYED_STATES, read_serving_state, serving_states

__all__ = [
    "STEP",
    "CollectReport",
    "collect_jobs",
    "drop_undeployed_answers",
    "handle_batch_collect_request",
]

STEP = "batch-collect"
_log = logging.getLogger("cascade.steps.batch_collect")

StoreMaker = Callable[[], PrecomputedStore | None]


@dataclass
class CollectReport:
    jobs_seen: int = 0
    collected: list[str] = field(default_factory=list)
    already_collected: int = 0
    running: int = 0
    ended_without_output: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def handle_batch_collect_request(
    ctx: StepContext, attributes: dict[str, Any], data: Any
) -> CollectReport:
    """The ``batch-collect`` function: one sweep per scheduled ``BatchCollectRequest``:
    the answers of versions no longer deployed leave the store, then (on Google Cloud)
    the finished Vertex AI batch jobs are collected."""
    envelope = PubSubEnvelope.from_cloudevent(attributes, data)
    request = decode_message(envelope, BatchCollectRequest)
    store = _LazyStore(ctx)
    try:
        dropped = drop_undeployed_answers(ctx, store)
        if ctx.settings.job_service_url:
            _log.debug("local cloud: batch tasks write their own tables; nothing to collect")
            report = CollectReport()
        else:
            report = _collect_cloud_jobs(ctx, request, store)
    finally:
        store.close()
    report.dropped = dropped
    _log.info(
        "batch-collect: %d job(s) seen, %d collected, %d running, %d ended without output, "
        "%d failed, %d version(s) of answers dropped",
        report.jobs_seen,
        len(report.collected),
        report.running,
        len(report.ended_without_output),
        len(report.failures),
        len(report.dropped),
        extra={"labels": {"event_id": envelope.event_id}, "json_fields": asdict(report)},
    )
    return report


def _collect_cloud_jobs(
    ctx: StepContext, request: BatchCollectRequest, store: StoreMaker
) -> CollectReport:
    client = job_service_client(ctx.settings)
    try:
        jobs = cascade_batch_jobs(
            client, ctx.settings, created_after=ctx.clock() - timedelta(seconds=request.lookback_s)
        )
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    bigquery_client = make_bigquery_client(ctx.settings)
    try:
        return collect_jobs(ctx, jobs, bigquery_client=bigquery_client, make_store=store)
    finally:
        bigquery_client.close()  # type: ignore[no-untyped-call]


def drop_undeployed_answers(ctx: StepContext, make_store: StoreMaker) -> list[str]:
    """Drop from the store the answers of every version ``serving.json`` no longer
    deploys (retired, rolled back), once per version (a create-only record,
    ``models/<dataset>/batch-predictions/dropped-v<version>.json``, says it was done).
    Returns ``<dataset> v<version>`` of each version dropped now. Without a configured
    store there is nothing to drop."""
    dropped: list[str] = []
    for dataset, state in serving_states(ctx.artifacts):
        for entry in state.versions:
            if entry.state in DEPLOYED_STATES:
                continue
            record = f"models/{dataset}/batch-predictions/dropped-v{entry.version}.json"
            if ctx.artifacts.read(record) is not None:
                continue
            store = make_store()
            if store is None:
                return dropped
            rows = store.drop_version(dataset, entry.version)
            body = {"rows": rows, "state": entry.state, "at": ctx.clock().isoformat()}
            ctx.artifacts.create(record, json.dumps(body).encode())
            _log.info(
                "%s v%s (%s): %d answer(s) dropped", dataset, entry.version, entry.state, rows
            )
            dropped.append(f"{dataset} v{entry.version}")
    return dropped


class _LazyStore:
    """The configured precomputed store, made on first use (most sweeps load nothing)."""

    def __init__(self, ctx: StepContext) -> None:
        self._factory = store_factory(PrecomputedSettings(), ctx.settings.project)
        self._store: PrecomputedStore | None = None

    def __call__(self) -> PrecomputedStore | None:
        if self._store is None and self._factory is not None:
            self._store = self._factory()
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def collect_jobs(
    ctx: StepContext,
    jobs: list[vertex.BatchPredictionJob],
    *,
    bigquery_client: bigquery.Client,
    make_store: StoreMaker,
) -> CollectReport:
    """Collect each succeeded job, record each ended one; one failure stops no other."""
    report = CollectReport(jobs_seen=len(jobs))
    for job in jobs:
        try:
            if job.state in SUCCEEDED:
                if _collect(ctx, job, bigquery_client, make_store):
                    report.collected.append(str(job.name))
                else:
                    report.already_collected += 1
            elif job.state in ENDED_WITHOUT_OUTPUT:
                if _record_end(ctx, job):
                    report.ended_without_output.append(str(job.name))
            else:
                report.running += 1
        except Exception as error:  # noqa: BLE001 - one job's failure is not the sweep's
            _log.exception("batch-collect: %s failed", job.name)
            report.failures[str(job.name)] = f"{type(error).__name__}: {error}"
            _failed_collection(ctx, job, error)
    return report


def _dataset(job: vertex.BatchPredictionJob) -> str:
    dataset = str(dict(job.labels).get(DATASET_LABEL, ""))
    if not DATASET_NAME_PATTERN.fullmatch(dataset):
        raise BadInputError(f"{job.name}: no valid {DATASET_LABEL} label: {dataset!r}")
    return dataset


def _collect(
    ctx: StepContext,
    job: vertex.BatchPredictionJob,
    client: bigquery.Client,
    make_store: StoreMaker,
) -> bool:
    """Collect one succeeded job; False when it was collected before."""
    dataset = _dataset(job)
    found = read_serving_state(ctx.artifacts, dataset)
    version = str(dict(job.labels).get(VERSION_LABEL, ""))
    entry = None if found is None else found[0].version(version)
    if found is None or entry is None:
        raise BadInputError(f"{job.name}: {dataset} has no version {version!r} in serving.json")
    transform = read_transform_spec(ctx.artifacts, entry.run_id)
    if transform is None:
        raise BadInputError(f"{job.name}: run {entry.run_id} has no transform spec: no key")
    output = vertex_output(job, key=transform.passthrough_key or "key")
    # Labels are anyone's to set: only a job that scored this version's model into the
    # predictions dataset is Cascade's batch (else its rows would reach the store).
    expected = f"{ctx.settings.project}.{ctx.settings.warehouse_dataset(PREDICTIONS_WAREHOUSE)}"
    if output.output_dataset != expected:
        raise BadInputError(
            f"{job.name}: wrote to {output.output_dataset}, not the predictions dataset {expected}"
        )
    if not entry.vertex_model or str(job.model) != entry.vertex_model:
        raise BadInputError(
            f"{job.name}: scored {job.model or 'no model'}, not version {version}'s model "
            f"{entry.vertex_model or '(none recorded)'}"
        )
    state = found[0]
    deployed = {item.version for item in state.deployed}
    load_store = None
    if state.mode in RELOADED_MODES and version in deployed:
        store = make_store()
        if store is None:
            _alert(
                ctx,
                job,
                "ERROR",
                f"{dataset} is served {state.mode} but this function has no precomputed store "
                f"(CASCADE_PRECOMPUTED_INSTANCE): version {version}'s answers were not loaded",
            )
        else:

            def load_store(name: str, number: str) -> int | None:
                return reload_version(ctx.settings, store, client, name, number)

    collected = collect_vertex_output(
        output,
        client=client,
        artifacts=ctx.artifacts,
        project=ctx.settings.project,
        bq_dataset=ctx.settings.warehouse_dataset(PREDICTIONS_WAREHOUSE),
        load_store=load_store,
        now=ctx.clock,
    )
    return not collected.skipped


def _record_once(
    ctx: StepContext, job: vertex.BatchPredictionJob, kind: str, record: dict[str, str]
) -> bool:
    """Write ``record`` beside the job's batch, create-only; True the first time."""
    dataset = _dataset(job)
    batch_id = str(dict(job.labels).get(BATCH_ID_LABEL, ""))
    job_id = str(job.name).rsplit("/", 1)[-1]
    if not batch_id.isalnum() or not job_id.isdigit():
        raise BadInputError(f"{job.name}: not a batch job Cascade submitted")
    name = f"models/{dataset}/batch-predictions/{batch_id}/{kind}-{job_id}.json"
    return ctx.artifacts.create(name, json.dumps(record).encode()) is not None


def _record_end(ctx: StepContext, job: vertex.BatchPredictionJob) -> bool:
    """Record a job that ended without output, once; True (and an alert) the first time."""
    record = {
        "job": str(job.name),
        "state": vertex.JobState(job.state).name,
        "error": str(job.error.message),
    }
    if not _record_once(ctx, job, "ended", record):
        return False
    _alert(
        ctx,
        job,
        "ERROR",
        f"batch job {job.name} ended {record['state']}: {record['error'] or 'no error given'}",
    )
    return True


def _failed_collection(ctx: StepContext, job: vertex.BatchPredictionJob, error: Exception) -> None:
    """Alert once for a job whose collection fails (every sweep tries it again)."""
    reason = f"{type(error).__name__}: {error}"
    try:
        first = _record_once(ctx, job, "collect-failed", {"job": str(job.name), "error": reason})
    except Exception:  # noqa: BLE001 - not Cascade's job, or the bucket is down: say it
        first = True
    if first:
        _alert(ctx, job, "WARNING", f"collecting batch job {job.name} failed: {reason}")


def _alert(
    ctx: StepContext,
    job: vertex.BatchPredictionJob,
    severity: Literal["WARNING", "ERROR"],
    summary: str,
) -> None:
    try:
        dataset = _dataset(job)
    except BadInputError:
        _log.error("batch-collect: %s (no dataset to alert)", summary)
        return
    ctx.bus.publish(
        Alert(
            dataset=dataset,
            step=STEP,
            severity=severity,
            summary=summary[:1000],
            details={"job": str(job.name)},
            at=ctx.clock(),
        )
    )
