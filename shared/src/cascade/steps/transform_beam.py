"""transform's Beam route: the run's train/eval split as an Apache Beam job, and its outputs.

A run whose snapshot ``transform.beam`` routes to Beam (``always``, or more rows than
``above_rows``: docs/beam.md, "The transform's materialisation") does not write its
split in the function: the transform step stores the split's ``MaterializeRequest``
(the snapshot, the fitted transform, the newest files: what ``write_split_shards`` is
called with) create-only at ``dataflow/inputs/<run>/materialize.json``, launches the
pipeline on it (``python -m cascade.beam --mode=materialize``: a Dataflow Flex Template
in the cloud, the local job service's stand-in on a laptop), records the job and ends
without publishing. When the job ends, its message on ``job-events`` reaches
``cascade.steps.transform.finish_transform_job``, which checks the job's outputs here
(``split_job_outputs``) and runs the rest of the transform step from them
(``transform_split``), the same code as the in-function path.

Once only, as validate's route: the request is created once (a redelivery finds it and
launches from the stored one, so the job and the spec written at its end agree even
when the baseline moved meanwhile); the job is written to the index
(``jobs/dataflow/<id>.json``, kind ``transform_split``) and then into the step's claim;
a crash between the launch and the records launches again under the same job name,
which Dataflow answers with the active job (ALREADY_EXISTS).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ValidationError

from cascade.beam.materialize_request import MaterializeRequest, MaterializeResult
from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import (
    BadInputError,
    PermanentError,
    TransientError,
    describe_validation_error,
)
from cascade.core.messages import ObjectRef
from cascade.core.observability import RunLogger
from cascade.core.runs import TRANSFORM_SPLIT_STEP, RunRecord
from cascade.core.validation_config import ValidationConfig
from cascade.jobs.beam_records import (
    RESULT_NAME,
    BeamJobRecord,
    BeamRunner,
    materialize_output_folder,
    materialize_request_name,
    write_beam_job_record,
)
from cascade.jobs.beam_spec import BeamMaterializeSpec, launch_of
from cascade.steps.runner import StepOutcome
from cascade.transform.newest import newest_column_name
from cascade.transform.shard_columns import shard_schema
from cascade.transform.spec import SnapshotFile
from cascade.transform.spec_fitting import FittedTransform

__all__ = [
    "SPLIT_STEP",
    "SplitJobError",
    "launch_split_job",
    "split_job_outputs",
    "split_request",
    "waiting_outcome",
]

SPLIT_STEP = TRANSFORM_SPLIT_STEP
"""The step that finishes transform from a Beam job's shards, when the job ends."""
_SIDES = ("train", "eval")


class SplitJobError(PermanentError):
    """A Beam split job failed or was cancelled, or left no usable outputs."""


def split_request(
    run: RunRecord,
    files: list[SnapshotFile],
    fitted: FittedTransform,
    newest: list[SnapshotFile],
    validation: ValidationConfig,
) -> MaterializeRequest:
    """The run's split as both paths cut it: the in-function ``write_split_shards`` call
    and the Beam job's request are this one value."""
    columns = shard_schema(fitted.label, fitted.features, fitted.passthrough_key).names
    return MaterializeRequest(
        dataset=run.dataset,
        run_id=run.run_id,
        files=files,
        label=fitted.label,
        features=fitted.features,
        passthrough_key=fitted.passthrough_key,
        split=fitted.split,
        newest=newest,
        newest_column=newest_column_name(columns),
        validation=validation,
    )


def _stored_request(
    ctx: StepContext, request: MaterializeRequest
) -> tuple[MaterializeRequest, ObjectRef, str]:
    """The run's request, stored create-only: this one, or the one a previous delivery
    stored (its job may be running on it). Its reference and the SHA-256 of its bytes."""
    name = materialize_request_name(request.run_id)
    data = request.model_dump_json(indent=2).encode()
    generation = ctx.artifacts.create(name, data)
    if generation is None:
        stored = ctx.artifacts.read(name)
        if stored is None:
            raise TransientError(f"{ctx.artifacts.uri(name)} vanished after it was created")
        data, generation = stored.data, stored.generation
        request = _parsed_request(ctx.artifacts.uri(name), data)
    ref = ObjectRef(bucket=ctx.artifacts.bucket_name, name=name, generation=generation)
    return request, ref, hashlib.sha256(data).hexdigest()


def _parsed_request(uri: str, data: bytes) -> MaterializeRequest:
    try:
        return MaterializeRequest.model_validate_json(data)
    except ValidationError as error:
        raise SplitJobError(
            f"{uri}: not a split request: {describe_validation_error(error)}"
        ) from error


def launch_split_job(
    ctx: StepContext,
    runner: BeamRunner,
    claim: ClaimHandle,
    run: RunRecord,
    request: MaterializeRequest,
    skipped: dict[str, str],
    log: RunLogger,
) -> StepOutcome:
    """Store the request, launch the job, index it, record it in the claim; the step
    ends waiting on it."""
    request, ref, digest = _stored_request(ctx, request)
    output = materialize_output_folder(run.run_id)
    spec = BeamMaterializeSpec(
        run_id=run.run_id,
        dataset=run.dataset,
        request_uri=ctx.artifacts.uri(ref.name),
        output_uri=ctx.artifacts.uri(output),
    )
    job_id = runner.submit(spec)  # a refusal is permanent (the run fails), else retried
    job_name, _ = launch_of(spec)
    write_beam_job_record(
        ctx.artifacts,
        BeamJobRecord(
            kind=SPLIT_STEP,
            job_id=job_id,
            job_name=job_name,
            run_id=run.run_id,
            dataset=run.dataset,
            source=ref,
            content_digest=digest,
            output=output,
            submitted_at=ctx.clock(),
        ),
    )
    details = {
        "beam_job": job_id,
        "beam_job_name": job_name,
        "beam_request": ref.uri,
        "beam_output": ctx.artifacts.uri(output),
        "files": len(request.files),
        "rows": sum(file.rows for file in request.files),
        "skipped_features": skipped,
    }
    claim.record_submission(**details)
    log.info(
        "the split of %d rows from %d file(s) launched as Beam job %s",
        details["rows"],
        details["files"],
        job_id,
    )
    return waiting_outcome(details)


def waiting_outcome(details: dict[str, Any]) -> StepOutcome:
    """transform's outcome while the Beam job runs: nothing published, the run running."""
    return StepOutcome(
        summary=(
            f"the split of {details['rows']} rows from {details['files']} file(s) is "
            f"written by Beam job {details['beam_job']}: transform finishes when the job ends"
        ),
        outputs=dict(details),
        lineage={"beam_split_job": details["beam_job"]},
    )


def split_job_outputs(
    ctx: StepContext, record: BeamJobRecord
) -> tuple[MaterializeRequest, MaterializeResult]:
    """The request the job ran on and its ``ok`` result, checked: SplitJobError naming
    the object when either is missing or not what the step and the pipeline write, or
    when the result lists a shard that is not the job's; BadInputError with the
    pipeline's message (the file, the row) for ``bad_input``."""
    request_uri = f"gs://{record.source.bucket}/{record.source.name}"
    stored = ctx.artifacts.read(record.source.name, generation=record.source.generation)
    if stored is None or hashlib.sha256(stored.data).hexdigest() != record.content_digest:
        raise SplitJobError(
            f"the split request {request_uri}#{record.source.generation} of Beam job "
            f"{record.job_id} is gone or was changed after the launch"
        )
    request = _parsed_request(request_uri, stored.data)
    result = _split_result(ctx, record)
    if result.status == "bad_input":
        raise BadInputError(result.message)  # the pipeline's message names the file
    _check_shards(ctx, record, request, result)
    return request, result


def _split_result(ctx: StepContext, record: BeamJobRecord) -> MaterializeResult:
    name = f"{record.output}/{RESULT_NAME}"
    stored = ctx.artifacts.read(name)
    if stored is None:
        raise SplitJobError(
            f"the Beam split job {record.job_id} succeeded without writing "
            f"{ctx.artifacts.uri(name)}"
        )
    try:
        return MaterializeResult.model_validate_json(stored.data)
    except ValidationError as error:
        raise SplitJobError(
            f"{ctx.artifacts.uri(name)}: not the pipeline's result: "
            f"{describe_validation_error(error)}"
        ) from error


def _check_shards(
    ctx: StepContext, record: BeamJobRecord, request: MaterializeRequest, result: MaterializeResult
) -> None:
    """Every listed shard is a Parquet object the job wrote under its own folder (never
    a name a result could point training at elsewhere), and the counts add up."""
    where = ctx.artifacts.uri(f"{record.output}/{RESULT_NAME}")
    written = set(ctx.artifacts.list_names(f"{record.output}/"))
    for side, uris in zip(_SIDES, (result.train_files, result.eval_files), strict=True):
        prefix = ctx.artifacts.uri(f"{record.output}/{side}/")
        for uri in uris:
            name = uri.removeprefix(ctx.artifacts.uri(""))
            if not uri.startswith(prefix) or not uri.endswith(".parquet") or ".." in uri:
                raise SplitJobError(
                    f"{where}: {uri!r} is not a {side} shard of job {record.job_id}"
                )
            if name not in written:
                raise SplitJobError(f"{where}: the {side} shard {uri} does not exist")
        if len(set(uris)) != len(uris):
            raise SplitJobError(f"{where}: a {side} shard is listed twice")
    if len(result.file_eval_rows) != len(request.files) or (
        sum(result.file_eval_rows) != result.eval_rows
    ):
        raise SplitJobError(
            f"{where}: eval rows per file {result.file_eval_rows} do not match the "
            f"{len(request.files)} file(s) and {result.eval_rows} eval rows"
        )
