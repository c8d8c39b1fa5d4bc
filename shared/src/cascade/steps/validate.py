"""validate: a data file landed in ``gs://<landing>/<dataset>/...``; is it fit to train on?

The landed object is streamed from the landing bucket (never written to a local path
named after it), summarised, and judged against the dataset's schema (inferred from
this file when the dataset has none) and the baseline statistics of the data accepted
so far. Statistics, anomalies, the schema used and an HTML report go to
``runs/<run_id>/validation/``.

Accepted: the baseline absorbs the file's statistics (exactly once per file), the
accepted-files manifest gets the file, and ``data-validated`` is published. Rejected:
the object is copied to the quarantine prefix with its anomalies, the run ends
``rejected`` with the reason, and an alert is published; the event is acknowledged.
Unreadable files raise BadInputError, which the runner records and alerts.
"""

from __future__ import annotations

import posixpath
from typing import Any

from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadInputError, BadRequestError
from cascade.core.events import StorageObjectEvent
from cascade.core.messages import Alert, DataValidated, ObjectRef
from cascade.core.observability import RunLogger
from cascade.core.paths import DatasetPaths, RunPaths, check_dataset_name
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.report.validation_page import render_validation_page
from cascade.steps.runner import StepOutcome, execute_step
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.manifest import AcceptedFile
from cascade.validation.names import check_landed_name, file_format_of
from cascade.validation.schema import parse_schema_text, schema_to_text
from cascade.validation.source import DataSource
from cascade.validation.validator import FileValidation, validate_file

__all__ = ["dataset_of_object", "handle_object_finalized"]

STEP = "validate"
_ALERT_FINDINGS = 20


def dataset_of_object(object_name: str) -> str:
    """The dataset a landed object belongs to: its first path segment."""
    dataset, separator, rest = object_name.partition("/")
    if not separator or not rest or rest.endswith("/"):
        raise BadRequestError(
            f"object {object_name!r} is not under a dataset folder: upload to <dataset>/<file>"
        )
    return check_dataset_name(dataset)


def handle_object_finalized(ctx: StepContext, event: StorageObjectEvent) -> StepOutcome | None:
    dataset = dataset_of_object(event.name)
    now = ctx.clock()
    run = RunRecord(
        run_id=run_id_for_object(dataset, event.bucket, event.name, event.generation),
        dataset=dataset,
        trigger=Trigger(
            kind="object", uri=event.uri, generation=event.generation, event_id=event.event_id
        ),
        created_at=now,
        updated_at=now,
    )

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return validate_landed_object(ctx, run, event, log)

    return execute_step(ctx, run=run, step=STEP, owner=event.event_id, body=body)


def validate_landed_object(
    ctx: StepContext, run: RunRecord, event: StorageObjectEvent, log: RunLogger
) -> StepOutcome:
    """The body of the step: judge the object, then accept or reject it."""
    source_ref = ObjectRef(bucket=event.bucket, name=event.name, generation=event.generation)
    check_landed_name(event.name, uri=source_ref.uri)
    paths = DatasetPaths(run.dataset)
    file_id = run.run_id
    already = ctx.artifacts.read_model(paths.accepted_manifest(file_id), AcceptedFile)
    if already is not None:
        log.info("resumed after %s was accepted: republishing", source_ref.uri)
        return _accepted_outcome(ctx, run, source_ref, already[0])
    config = load_pipeline_config(ctx.artifacts, run.dataset).validation
    source = _landed_source(ctx, event, source_ref)
    schema, schema_generation = _stored_schema(ctx, paths)
    baselines = BaselineStore(ctx.artifacts, run.dataset)
    stored = baselines.load()
    validation = validate_file(
        source,
        schema=schema,
        baseline=None if stored is None else stored.baseline,
        config=config,
    )
    page = render_validation_page(validation, run_id=run.run_id, config=config)
    outputs = _write_run_artifacts(ctx, RunPaths(run.run_id), validation, page, source_ref)
    log.info(
        "%s: %d examples, %d errors, %d warnings",
        source_ref.uri,
        validation.summary.num_examples,
        len(validation.result.errors),
        len(validation.result.warnings),
    )
    if not validation.accepted:
        return _reject(ctx, run, source_ref, validation, outputs)
    schema_uri = _keep_schema(ctx, paths, validation, schema_generation)
    baselines.merge_file(file_id, validation.summary, config)
    manifest = AcceptedFile(
        file_id=file_id,
        run_id=run.run_id,
        uri=f"gs://{event.bucket}/{event.name}",
        generation=event.generation,
        num_examples=validation.summary.num_examples,
        stats_uri=outputs["statistics"],
        schema_uri=schema_uri,
        accepted_at=ctx.clock(),
        warnings=[str(finding) for finding in validation.result.warnings],
    )
    ctx.artifacts.create(
        paths.accepted_manifest(file_id), manifest.model_dump_json(indent=2).encode()
    )
    return _accepted_outcome(ctx, run, source_ref, manifest, outputs)


def _landed_source(ctx: StepContext, event: StorageObjectEvent, ref: ObjectRef) -> DataSource:
    """The exact generation the event names, streamed in chunks from its bucket."""
    landing = ctx.store(event.bucket)
    info = landing.stat(event.name, generation=event.generation)
    if info is None:
        raise BadInputError("the object no longer exists (deleted or overwritten)", uri=ref.uri)
    return DataSource(
        uri=ref.uri,
        file_format=file_format_of(event.name, uri=ref.uri),
        size=info.size,
        open=lambda: landing.open_read(event.name, generation=event.generation),
    )


def _stored_schema(ctx: StepContext, paths: DatasetPaths) -> tuple[Any | None, int]:
    """The dataset's schema (a user's edits included) and its generation; 0 if none."""
    stored = ctx.artifacts.read(paths.schema)
    if stored is None:
        return None, 0
    text = stored.data.decode("utf-8", errors="replace")
    return parse_schema_text(text, where=ctx.artifacts.uri(paths.schema)), stored.generation


def _keep_schema(
    ctx: StepContext, paths: DatasetPaths, validation: FileValidation, generation: int
) -> str:
    """Store an inferred schema unless one appeared meanwhile; the schema's versioned URI."""
    if validation.schema_inferred:
        header = (
            "Inferred by Cascade from the first accepted file of the dataset.\n"
            "Edit freely: a stored schema is never overwritten by inference."
        )
        created = ctx.artifacts.create(
            paths.schema,
            schema_to_text(validation.schema, header=header).encode(),
            content_type="text/plain",
        )
        if created is None:  # a concurrent first file stored its schema first
            stored = ctx.artifacts.read(paths.schema)
            created = stored.generation if stored is not None else 0
        generation = created
    return f"{ctx.artifacts.uri(paths.schema)}#{generation}"


def _write_run_artifacts(
    ctx: StepContext,
    run_paths: RunPaths,
    validation: FileValidation,
    page: str,
    ref: ObjectRef,
) -> dict[str, str]:
    folder = run_paths.step_dir("validation")
    files = {
        "statistics": (
            f"{folder}/stats.pb",
            validation.statistics.SerializeToString(),
            "application/x-protobuf",
        ),
        "anomalies": (
            f"{folder}/anomalies.pbtxt",
            text_format.MessageToString(validation.result.anomalies).encode(),
            "text/plain",
        ),
        "schema": (
            f"{folder}/schema.pbtxt",
            schema_to_text(validation.schema).encode(),
            "text/plain",
        ),
        "report": (
            f"{folder}/report.html",
            page.encode(),
            "text/html; charset=utf-8",
        ),
    }
    outputs = {"source": ref.uri}
    for key, (name, data, content_type) in files.items():
        ctx.artifacts.write(name, data, content_type=content_type)
        outputs[key] = ctx.artifacts.uri(name)
    return outputs


def _accepted_outcome(
    ctx: StepContext,
    run: RunRecord,
    ref: ObjectRef,
    manifest: AcceptedFile,
    outputs: dict[str, str] | None = None,
) -> StepOutcome:
    outputs = dict(outputs or {"statistics": manifest.stats_uri})
    outputs["manifest"] = ctx.artifacts.uri(
        DatasetPaths(run.dataset).accepted_manifest(manifest.file_id)
    )
    note = f", {len(manifest.warnings)} warning(s)" if manifest.warnings else ""
    return StepOutcome(
        summary=f"accepted {ref.uri}: {manifest.num_examples} examples{note}",
        outputs={**outputs, "warnings": manifest.warnings},
        messages=[
            DataValidated(dataset=run.dataset, run_id=run.run_id, source=ref, outputs=outputs)
        ],
        lineage={
            "source": ref.uri,
            "schema": manifest.schema_uri,
            "statistics": manifest.stats_uri,
        },
    )


def _reject(
    ctx: StepContext,
    run: RunRecord,
    ref: ObjectRef,
    validation: FileValidation,
    outputs: dict[str, str],
) -> StepOutcome:
    errors = [str(finding) for finding in validation.result.errors]
    quarantine = _quarantine(ctx, run, ref, validation)
    summary = (
        f"rejected {ref.uri}: {len(errors)} blocking anomal"
        f"{'y' if len(errors) == 1 else 'ies'}: " + "; ".join(errors[:3])
    )
    alert = Alert(
        dataset=run.dataset,
        run_id=run.run_id,
        step=STEP,
        severity="ERROR",
        summary=summary,
        details={
            "anomalies": errors[:_ALERT_FINDINGS],
            "report": outputs["report"],
            "quarantine": quarantine,
        },
        at=ctx.clock(),
    )
    return StepOutcome(
        state="rejected",
        run_state="rejected",
        summary=summary,
        outputs={
            **outputs,
            "quarantine": quarantine,
            "errors": errors,
            "warnings": [str(f) for f in validation.result.warnings],
        },
        messages=[alert],
        lineage={"source": ref.uri},
    )


def _quarantine(
    ctx: StepContext, run: RunRecord, ref: ObjectRef, validation: FileValidation
) -> str:
    """Copy the object (server side) and its anomalies under the run's quarantine prefix."""
    prefix = DatasetPaths(run.dataset).quarantine(run.run_id)
    target = f"{prefix}/{posixpath.basename(ref.name)}"
    copied = ctx.store(ref.bucket).copy(ref.name, ctx.artifacts, target, generation=ref.generation)
    if copied is None:
        raise BadInputError("the object no longer exists (deleted or overwritten)", uri=ref.uri)
    ctx.artifacts.write(
        f"{prefix}/anomalies.pbtxt",
        text_format.MessageToString(validation.result.anomalies).encode(),
        content_type="text/plain",
    )
    return ctx.artifacts.uri(prefix)
