"""validate: a data file landed in ``gs://<landing>/<dataset>/...``; is it fit to train on?

The landed object is streamed from the landing bucket (never written to a local path
named after it), summarised, and judged against the dataset's schema (inferred from
this file when the dataset has none) and the baseline statistics of the data accepted
so far. Statistics, anomalies, the schema used and an HTML report go to
``runs/<run_id>/validation/``.

The policy (docs/validation.md, "Policy") follows each finding's severity. Accepted (no
finding of severity ``error``): the baseline absorbs the file's statistics (exactly once
per file), the accepted-files manifest gets the file, and ``data-validated`` is
published. Value skews (findings of severity ``retrain``: the world moved) do not stop
the file: the manifest and the step's outputs record them, a WARNING alert names them,
and transform asks for retraining on all accepted data with the file. Rejected (a schema
skew or broken data): the object is copied to the quarantine prefix with its anomalies,
the run ends ``rejected`` with the reason, and an ERROR alert is published; the event is
acknowledged. Unreadable files raise BadInputError, which the runner records and alerts.

Only the landing bucket is validated: an event naming another bucket is refused
(BadRequestError: logged and alerted by the adapter, no run). Every landed object gets a
run record; one whose name is refused (``names.landed_dataset``) gets a failed run under
the pseudo-dataset ``INVALID_NAMES_DATASET`` with the reason, so ``cascade status``
shows it.

An identical re-upload (the same bytes: same SHA-256, whatever its name or generation)
of a file already accepted is accepted as a duplicate: its statistics are not merged
into the baseline again, the training data keeps one copy, and ``data-validated`` is
published as for any accepted file (a re-upload is how people ask for a run; the model
trained on unchanged data is judged like any other). When the earlier copy's generation
is gone (the usual case: the same name uploaded again), the duplicate's manifest stands
in for it, so the data stays in the training snapshot.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import replace
from typing import Any

from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]
from pydantic import ValidationError

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import (
    BadInputError,
    BadRequestError,
    PermanentError,
    TransientError,
    describe_validation_error,
)
from cascade.core.events import StorageObjectEvent
from cascade.core.job_spec import JobStatus
from cascade.core.messages import Alert, DataValidated, ObjectRef, StepMessage
from cascade.core.observability import RunLogger
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.runs import VALIDATE_STATISTICS_STEP, RunRecord, Trigger, run_id_for_object
from cascade.core.store import READ_CHUNK_BYTES
from cascade.core.streams import read_stream_fields
from cascade.core.validation_config import Check, Severity, ValidationConfig
from cascade.jobs.beam_records import (
    RESULT_NAME,
    STATISTICS_NAME,
    BeamJobRecord,
    BeamResult,
    BeamRunner,
)
from cascade.jobs.beam_runners import beam_runner_for
from cascade.report.validation_page import render_validation_page
from cascade.steps.beam_job_end import ended_job
from cascade.steps.runner import StepOutcome, execute_step
from cascade.steps.stream_records import split_out_records, with_split
from cascade.steps.validate_beam import launch_statistics_job, waiting_outcome
from cascade.validation.anomalies import ValidationResult, anomalies_proto
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.drift_checks import DriftMeasurement
from cascade.validation.manifest import (
    AcceptedFile,
    ContentEntry,
    ValueSkew,
    content_digest,
    content_entry_name,
)
from cascade.validation.names import (
    INVALID_NAMES_DATASET,
    FileFormat,
    check_landed_name,
    file_format_of,
    landed_dataset,
)
from cascade.validation.schema import parse_schema_text, schema_to_text
from cascade.validation.source import DataSource
from cascade.validation.statistics import summary_of_statistics
from cascade.validation.tfmd import statistics_pb2
from cascade.validation.validator import (
    FileValidation,
    judge_summary,
    refused_by_header,
    validate_file,
)

__all__ = [
    "BEAM_STEP",
    "dataset_of_object",
    "finish_beam_job",
    "handle_object_finalized",
    "validate_landed_object",
    "value_skews_of",
]

STEP = "validate"
BEAM_STEP = VALIDATE_STATISTICS_STEP
"""The step that finishes validate from a Beam job's statistics, when the job ends."""
_ALERT_FINDINGS = 20
_log = logging.getLogger("cascade.steps.validate")
_SUMMARY_SKEWS = 3


def dataset_of_object(object_name: str) -> str:
    """The dataset a landed object's run is recorded under.

    Its first path segment when the whole name is acceptable (``names.landed_dataset``),
    else ``INVALID_NAMES_DATASET``: never a dataset read from a cleaned-up name.
    """
    try:
        return landed_dataset(object_name)
    except BadInputError:
        return INVALID_NAMES_DATASET


def check_landing_bucket(ctx: StepContext, event: StorageObjectEvent) -> None:
    """Only the landing bucket is validated (an event for another bucket is a mistake)."""
    landing = ctx.settings.landing_bucket
    if event.bucket != landing:
        raise BadRequestError(
            f"validate reads only the landing bucket {landing!r}: refusing the event for "
            f"{event.uri!r} (no run is recorded)"
        )


def handle_object_finalized(
    ctx: StepContext, event: StorageObjectEvent, *, beam_runner: BeamRunner | None = None
) -> StepOutcome | None:
    """Validate a landed object (its run's first step); ``beam_runner`` launches the
    Beam job of a file routed to Beam (default: ``jobs.runners.beam_runner_for``)."""
    check_landing_bucket(ctx, event)
    try:
        dataset = landed_dataset(event.name, uri=event.uri)
        refusal: BadInputError | None = None
    except BadInputError as error:
        dataset, refusal = INVALID_NAMES_DATASET, error
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
        if refusal is not None:
            raise refusal  # a failed run with the reason: the object is never read
        return validate_landed_object(ctx, run, event, log, claim=claim, beam_runner=beam_runner)

    return execute_step(ctx, run=run, step=STEP, owner=event.event_id, body=body)


def validate_landed_object(
    ctx: StepContext,
    run: RunRecord,
    event: StorageObjectEvent,
    log: RunLogger,
    *,
    acknowledged: frozenset[tuple[str, str]] = frozenset(),
    read_from: ObjectRef | None = None,
    claim: ClaimHandle | None = None,
    beam_runner: BeamRunner | None = None,
) -> StepOutcome:
    """The body of the step: judge the object, then accept or reject it.

    A quarantine release (``cascade.steps.quarantine_review``) passes ``acknowledged``:
    the (check, feature) findings a person reviewed, graded ``warning`` for this file
    only; and ``read_from`` when the landed generation is gone and its quarantine copy is
    read instead (the manifest then names the copy, which transform reads).

    With the step's ``claim`` (the landed-object path), a file that
    ``validation.beam`` routes to Beam has its statistics computed by a Beam job
    (``cascade.steps.validate_beam``): the step records the job and ends without
    publishing; ``finish_beam_job`` judges the job's statistics when it ends, with the
    same code as here (``_judged``).
    """
    check_landed_name(event.name, uri=f"gs://{event.bucket}/{event.name}")
    source_ref = read_from or ObjectRef(
        bucket=event.bucket, name=event.name, generation=event.generation
    )
    paths = DatasetPaths(run.dataset)
    file_id = run.run_id
    resumed = _resumed_outcome(ctx, run, source_ref, log)
    if resumed is not None:
        return resumed
    if claim is not None and claim.claim.submitted.get("beam_job"):
        log.info("resumed after launching Beam job %s", claim.claim.submitted["beam_job"])
        return waiting_outcome(claim.claim.submitted)
    pipeline = load_pipeline_config(ctx.artifacts, run.dataset)
    config = pipeline.validation
    source = _landed_source(ctx, source_ref, _stream_fields(ctx, run.dataset, source_ref))
    digest = content_digest(source.open)
    original = _accepted_content(ctx, run.dataset, digest)
    if original is not None and original.file_id != file_id:
        return _accept_duplicate(ctx, run, source_ref, original, log)
    schema, schema_generation = _stored_schema(ctx, paths)
    if (
        claim is not None
        and config.beam.routes(source.size or 0)
        and refused_by_header(source, config) is None  # refused at once, here
    ):
        runner = beam_runner if beam_runner is not None else beam_runner_for(ctx.settings)
        return launch_statistics_job(
            ctx, runner, claim, run, source, source_ref, digest, schema, config, log
        )
    baselines = BaselineStore(ctx.artifacts, run.dataset)
    stored = baselines.load(schema, config)
    validation = validate_file(
        source,
        schema=schema,
        baseline=None if stored is None else stored.baseline,
        config=config,
        label=pipeline.label,
    )
    return _judged(
        ctx,
        run,
        source_ref,
        source,
        digest,
        validation,
        config,
        schema_generation,
        baselines,
        log,
        acknowledged=acknowledged,
    )


def _resumed_outcome(
    ctx: StepContext, run: RunRecord, source_ref: ObjectRef, log: RunLogger
) -> StepOutcome | None:
    """The outcome of a step resumed after the file's manifest was written; None if it
    was not."""
    paths = DatasetPaths(run.dataset)
    already = ctx.artifacts.read_model(paths.accepted_manifest(run.run_id), AcceptedFile)
    if already is None:
        return None
    if already[0].duplicate_of is not None:
        log.info("resumed after %s was accepted as a duplicate", source_ref.uri)
        duplicate_of = already[0].duplicate_of
        return _duplicate_outcome(
            run, source_ref, duplicate_of, f"file {duplicate_of}", already[0], True
        )
    log.info("resumed after %s was accepted: republishing", source_ref.uri)
    outcome = _accepted_outcome(ctx, run, source_ref, already[0])
    if file_format_of(source_ref.name) is not FileFormat.AVRO:
        return outcome
    config = load_pipeline_config(ctx.artifacts, run.dataset).validation
    source = _landed_source(ctx, source_ref, already[0].record_fields)  # as judged
    split = split_out_records(ctx, run, source, config)
    return with_split(ctx, run, outcome, split)  # a stream file's counts, again


def _judged(
    ctx: StepContext,
    run: RunRecord,
    source_ref: ObjectRef,
    source: DataSource,
    digest: str,
    validation: FileValidation,
    config: ValidationConfig,
    schema_generation: int,
    baselines: BaselineStore,
    log: RunLogger,
    *,
    acknowledged: frozenset[tuple[str, str]] = frozenset(),
) -> StepOutcome:
    """The rest of validate once a file is judged, however its statistics were computed
    (here, or by a Beam job): the run's artifacts, then reject (quarantine) or accept
    (schema, content entry, baseline, manifest, ``data-validated``)."""
    paths = DatasetPaths(run.dataset)
    file_id = run.run_id
    if acknowledged:
        validation = _acknowledge(validation, acknowledged)
    page = render_validation_page(validation, run_id=run.run_id, config=config)
    outputs = _write_run_artifacts(ctx, RunPaths(run.run_id), validation, page, source_ref)
    log.info(
        "%s: %d examples, %d errors, %d value skews, %d warnings",
        source_ref.uri,
        validation.summary.num_examples,
        len(validation.result.errors),
        len(validation.result.value_skews),
        len(validation.result.warnings),
    )
    split = split_out_records(ctx, run, source, config)  # a stream file's unusable records
    if not validation.accepted:
        return with_split(ctx, run, _reject(ctx, run, source_ref, validation, outputs), split)
    schema_uri = _keep_schema(ctx, paths, validation, schema_generation)
    entry = ContentEntry(
        digest=digest,
        file_id=file_id,
        run_id=run.run_id,
        uri=f"gs://{source_ref.bucket}/{source_ref.name}",
        generation=source_ref.generation,
    )
    original = _claim_content(ctx, run.dataset, entry)
    if original.file_id != file_id:  # an identical file was accepted meanwhile
        return _accept_duplicate(ctx, run, source_ref, original, log)
    baselines.merge_file(file_id, validation.summary, config, schema=validation.schema)
    manifest = AcceptedFile(
        file_id=file_id,
        run_id=run.run_id,
        uri=f"gs://{source_ref.bucket}/{source_ref.name}",
        generation=source_ref.generation,
        num_examples=validation.summary.num_examples,
        stats_uri=outputs["statistics"],
        schema_uri=schema_uri,
        accepted_at=ctx.clock(),
        warnings=[str(finding) for finding in validation.result.warnings],
        value_skews=value_skews_of(validation.result),
        content_digest=digest,
        record_fields=None if source.record_fields is None else sorted(source.record_fields),
    )
    ctx.artifacts.create(
        paths.accepted_manifest(file_id), manifest.model_dump_json(indent=2).encode()
    )
    _compact_baseline(ctx, baselines, paths, validation.schema, config, log)
    return with_split(ctx, run, _accepted_outcome(ctx, run, source_ref, manifest, outputs), split)


def finish_beam_job(
    ctx: StepContext,
    job_id: str,
    *,
    owner: str,
    runner: BeamRunner | None = None,
    announces_end: bool = False,
    message: str = "",
) -> StepOutcome | None:
    """A Beam statistics job ended (or logged something): finish its run's validate.

    Called by evaluate-job-events for a Dataflow job message (which names only the job)
    and by reconcile for a run whose job's end was never heard of. The job index says
    which run and file; the runner says the job's state. A job still running is left
    alone (TransientError when its message announces its end, so the message is
    redelivered until the state is visible); a job Cascade did not launch is ignored.
    The ``validate_statistics`` step's claim makes a duplicate end event a no-op.
    ``message``: the job message's text (Dataflow says why a job failed there, not in
    the job's state), added to a failed job's reason.
    """
    ended = ended_job(
        ctx,
        job_id,
        kind="validate_statistics",
        runner=runner,
        announces_end=announces_end,
        message=message,
    )
    if ended is None:
        return None
    run = ended.run

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        return _finish_statistics(ctx, run, ended.record, ended.status, log)

    return execute_step(ctx, run=run, step=BEAM_STEP, owner=owner, body=body)


def _finish_statistics(
    ctx: StepContext, run: RunRecord, record: BeamJobRecord, status: JobStatus, log: RunLogger
) -> StepOutcome:
    """Validate's end from the job's outputs: what the in-function path does after
    ``compute_statistics``, with the same code (``judge_summary``, ``_judged``)."""
    ref = record.source
    resumed = _resumed_outcome(ctx, run, ref, log)
    if resumed is not None:
        return resumed
    if status.state != "succeeded":
        reason = status.error or "no reason given"
        raise BeamJobError(
            f"the Beam statistics job {record.job_id} of {ref.uri} {status.state}: {reason}"
        )
    result = _beam_result(ctx, record)
    if result.status == "bad_input":
        raise BadInputError(result.message)  # the pipeline's message names the file and row
    statistics = _beam_statistics(ctx, record)
    pipeline = load_pipeline_config(ctx.artifacts, run.dataset)
    config = pipeline.validation
    source = _landed_source(ctx, ref, record.record_fields)  # the fields the job was given
    schema, schema_generation = _stored_schema(ctx, DatasetPaths(run.dataset))
    baselines = BaselineStore(ctx.artifacts, run.dataset)
    stored = baselines.load(schema, config)
    validation = judge_summary(
        source.uri,
        summary_of_statistics(statistics),
        schema=schema,
        baseline=None if stored is None else stored.baseline,
        config=config,
        label=pipeline.label,
    )
    log.info("%s: statistics from Beam job %s", ref.uri, record.job_id)
    return _judged(
        ctx,
        run,
        ref,
        source,
        record.content_digest,
        validation,
        config,
        schema_generation,
        baselines,
        log,
    )


class BeamJobError(PermanentError):
    """A Beam statistics job failed or was cancelled, or left no usable outputs."""


def _beam_result(ctx: StepContext, record: BeamJobRecord) -> BeamResult:
    name = f"{record.output}/{RESULT_NAME}"
    stored = ctx.artifacts.read(name)
    if stored is None:
        raise BeamJobError(
            f"the Beam statistics job {record.job_id} succeeded without writing "
            f"{ctx.artifacts.uri(name)}"
        )
    try:
        return BeamResult.model_validate_json(stored.data)
    except ValidationError as error:
        raise BeamJobError(
            f"{ctx.artifacts.uri(name)}: not the pipeline's result: "
            f"{describe_validation_error(error)}"
        ) from error


def _beam_statistics(
    ctx: StepContext, record: BeamJobRecord
) -> statistics_pb2.DatasetFeatureStatisticsList:
    name = f"{record.output}/{STATISTICS_NAME}"
    stored = ctx.artifacts.read(name)
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        if stored is None:
            raise DecodeError("missing")
        statistics.ParseFromString(stored.data)
    except DecodeError as error:
        raise BeamJobError(
            f"the Beam statistics job {record.job_id} left no readable "
            f"{ctx.artifacts.uri(name)}: {error}"
        ) from error
    if len(statistics.datasets) != 1 or statistics.datasets[0].name != record.source.uri:
        raise BeamJobError(f"{ctx.artifacts.uri(name)} holds no statistics of {record.source.uri}")
    return statistics


def _compact_baseline(
    ctx: StepContext,
    baselines: BaselineStore,
    paths: DatasetPaths,
    schema: Any,
    config: ValidationConfig,
    log: RunLogger,
) -> None:
    """Fold the files accepted since the last compaction into a new one, when one is
    due (``BaselineStore.compact``). The file is in the baseline already: a failure
    here fails nothing, the next accepted file compacts."""
    try:
        baselines.compact(
            config,
            schema=schema,
            is_accepted=lambda file_id: (
                ctx.artifacts.stat(paths.accepted_manifest(file_id)) is not None
            ),
        )
    except TransientError as error:
        log.warning("%s: baseline compaction left to the next file: %s", baselines.uri, error)


def _accepted_content(ctx: StepContext, dataset: str, digest: str) -> ContentEntry | None:
    found = ctx.artifacts.read_model(content_entry_name(dataset, digest), ContentEntry)
    return None if found is None else found[0]


def _claim_content(ctx: StepContext, dataset: str, entry: ContentEntry) -> ContentEntry:
    """Record ``entry`` as the file that brings its content in, unless one did first."""
    name = content_entry_name(dataset, entry.digest)
    if ctx.artifacts.create(name, entry.model_dump_json(indent=2).encode()) is not None:
        return entry
    found = ctx.artifacts.read_model(name, ContentEntry)
    if found is None:  # deleted between the two calls: try once more
        return _claim_content(ctx, dataset, entry)
    return found[0]


def _accept_duplicate(
    ctx: StepContext,
    run: RunRecord,
    ref: ObjectRef,
    original: ContentEntry,
    log: RunLogger,
) -> StepOutcome:
    """The same bytes as an accepted file: accepted, but never merged or trained on twice.

    The baseline is not merged again. The training data keeps one copy: no manifest of
    its own while the original's generation exists; when it is gone (the usual identical
    re-upload: same name, new generation), this file stands in for it: a manifest marked
    ``duplicate_of``, and the content entry points at it from now on.
    """
    paths = DatasetPaths(run.dataset)
    found = ctx.artifacts.read_model(paths.accepted_manifest(original.file_id), AcceptedFile)
    earlier = None if found is None else found[0]
    stands_in: AcceptedFile | None = None
    if earlier is not None and not _still_exists(ctx, original):
        stands_in = earlier.model_copy(
            update={
                "file_id": run.run_id,
                "run_id": run.run_id,
                "uri": f"gs://{ref.bucket}/{ref.name}",
                "generation": ref.generation,
                "accepted_at": ctx.clock(),
                "duplicate_of": original.file_id,
                "warnings": [],
                "value_skews": [],  # the earlier copy brought them, and trained on them
            }
        )
        # the manifest first: a step resumed after it is a duplicate at once
        ctx.artifacts.create(
            paths.accepted_manifest(run.run_id), stands_in.model_dump_json(indent=2).encode()
        )
        moved = original.model_copy(
            update={
                "file_id": run.run_id,
                "run_id": run.run_id,
                "uri": f"gs://{ref.bucket}/{ref.name}",
                "generation": ref.generation,
            }
        )
        ctx.artifacts.write(
            content_entry_name(run.dataset, original.digest),
            moved.model_dump_json(indent=2).encode(),
            content_type="application/json",
        )
    log.info("%s is identical to %s (run %s)", ref.uri, original.uri, original.run_id)
    described = f"{original.uri}#{original.generation} (run {original.run_id})"
    return _duplicate_outcome(
        run, ref, original.file_id, described, stands_in or earlier, stands_in is not None
    )


def _still_exists(ctx: StepContext, entry: ContentEntry) -> bool:
    bucket, _, name = entry.uri.removeprefix("gs://").partition("/")
    try:
        store = ctx.store(bucket)
    except LookupError:
        return False
    return store.stat(name, generation=entry.generation) is not None


def _duplicate_outcome(
    run: RunRecord,
    ref: ObjectRef,
    duplicate_of: str,
    described: str,
    manifest: AcceptedFile | None,
    stands_in: bool,
) -> StepOutcome:
    """Accepted as a duplicate: the chain goes on (a re-upload asks for a run), on the
    same data as before."""
    replaced = (
        "; it stands in for the earlier copy, whose generation is gone, in the training data"
        if stands_in
        else "; the training data keeps the earlier copy only"
    )
    summary = (
        f"accepted as a duplicate: {ref.uri} has the same bytes as {described}, accepted "
        f"already; its statistics are not merged into the baseline again{replaced}"
    )
    outputs = {"source": ref.uri, "duplicate_of": duplicate_of}
    if manifest is not None:
        outputs["statistics"] = manifest.stats_uri
    return StepOutcome(
        summary=summary,
        outputs={**outputs, "warnings": []},
        messages=[
            DataValidated(dataset=run.dataset, run_id=run.run_id, source=ref, outputs=outputs)
        ],
        lineage={
            "source": ref.uri,
            "duplicate_of": duplicate_of,
            **({"statistics": manifest.stats_uri} if manifest is not None else {}),
        },
    )


def _stream_fields(ctx: StepContext, dataset: str, ref: ObjectRef) -> list[str] | None:
    """A stream file's allowed fields (its stream's schema as deployed), or None: not a
    stream file, or no stream schema deployed."""
    if file_format_of(ref.name, uri=ref.uri) is not FileFormat.AVRO:
        return None
    fields = read_stream_fields(ctx.artifacts, dataset)
    return None if fields is None else sorted(fields.names)


def _landed_source(
    ctx: StepContext, ref: ObjectRef, record_fields: list[str] | None = None
) -> DataSource:
    """The exact generation ``ref`` names, streamed in chunks from its bucket, as
    stored (a gzip ``Content-Encoding`` is undone by the readers, bounded);
    ``record_fields``: a stream file's allowed fields (``DataSource.record_fields``).

    The step reads a file several times (its digest, its header, its rows); an object
    no larger than one streaming request (``READ_CHUNK_BYTES``, what a stream holds at
    once anyway) is fetched whole, once, and every read is served from memory.
    """
    landing = ctx.store(ref.bucket)
    gone = BadInputError("the object no longer exists (deleted or overwritten)", uri=ref.uri)
    info = landing.stat(ref.name, generation=ref.generation)
    if info is None:
        raise gone
    file_format = file_format_of(ref.name, uri=ref.uri)
    if info.size <= READ_CHUNK_BYTES:
        stored = landing.read(ref.name, generation=ref.generation, raw=True)
        if stored is None:
            raise gone
        source = DataSource.in_memory(
            ref.uri, file_format, stored.data, content_encoding=info.content_encoding
        )
    else:
        source = DataSource(
            uri=ref.uri,
            file_format=file_format,
            size=info.size,
            open=lambda: landing.open_read(ref.name, generation=ref.generation),
            content_encoding=info.content_encoding,
        )
    fields = None if record_fields is None else frozenset(record_fields)
    return replace(source, record_fields=fields)


def _acknowledge(
    validation: FileValidation, acknowledged: frozenset[tuple[str, str]]
) -> FileValidation:
    """``validation`` with its blocking findings in ``acknowledged`` graded ``warning``."""
    findings = [
        finding.graded(Severity.WARNING)
        if finding.severity is Severity.ERROR
        and (finding.check.value, finding.feature) in acknowledged
        else finding
        for finding in validation.result.findings
    ]
    result = replace(validation.result, findings=findings)
    result = replace(result, anomalies=anomalies_proto(result, validation.schema))
    return replace(validation, result=result)


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


def value_skews_of(result: ValidationResult) -> list[ValueSkew]:
    """The value skews of ``result`` (its findings of severity ``retrain``), each with
    the largest exceeded measurement of its feature and check, when one was taken (an
    extreme drift's are its feature's drift measurements)."""
    exceeded: dict[tuple[str, Check], list[DriftMeasurement]] = {}
    for measurement in result.drift:
        if measurement.exceeded:
            key = (measurement.feature, measurement.check)
            exceeded.setdefault(key, []).append(measurement)
    skews = []
    for finding in result.value_skews:
        measured = exceeded.get((finding.feature, finding.check)) or (
            exceeded.get((finding.feature, Check.DRIFT), [])
            if finding.check is Check.EXTREME_DRIFT
            else []
        )
        worst = max(measured, key=_excess, default=None)
        skews.append(
            ValueSkew(
                check=finding.check.value,
                feature=finding.feature,
                description=finding.description,
                measure="" if worst is None else worst.measure,
                value=None if worst is None else worst.value,
                threshold=None if worst is None else worst.threshold,
            )
        )
    return skews


def _excess(measurement: DriftMeasurement) -> float:
    if measurement.threshold <= 0:
        return float("inf")
    return measurement.value / measurement.threshold


def _briefs(skews: list[ValueSkew], limit: int) -> str:
    shown = "; ".join(skew.brief() for skew in skews[:limit])
    more = len(skews) - limit
    return f"{shown}; and {more} more" if more > 0 else shown


def _accepted_outcome(
    ctx: StepContext,
    run: RunRecord,
    ref: ObjectRef,
    manifest: AcceptedFile,
    outputs: dict[str, str] | None = None,
) -> StepOutcome:
    """Accepted: ``data-validated``, and for value skews a WARNING alert naming them
    (republished as well when a resumed step finds the manifest written)."""
    outputs = dict(outputs or {"statistics": manifest.stats_uri})
    outputs["manifest"] = ctx.artifacts.uri(
        DatasetPaths(run.dataset).accepted_manifest(manifest.file_id)
    )
    note = f", {len(manifest.warnings)} warning(s)" if manifest.warnings else ""
    summary = f"accepted {ref.uri}: {manifest.num_examples} examples{note}"
    messages: list[StepMessage] = [
        DataValidated(dataset=run.dataset, run_id=run.run_id, source=ref, outputs=outputs)
    ]
    skews = manifest.value_skews
    if skews:
        summary += (
            f"; {len(skews)} value skew(s), retraining on all accepted data with it: "
            + _briefs(skews, _SUMMARY_SKEWS)
        )
        messages.append(_value_skew_alert(ctx, run, ref, skews, outputs))
    return StepOutcome(
        summary=summary,
        outputs={
            **outputs,
            "warnings": manifest.warnings,
            "value_skews": [skew.model_dump(mode="json") for skew in skews],
        },
        messages=messages,
        lineage={
            "source": ref.uri,
            "schema": manifest.schema_uri,
            "statistics": manifest.stats_uri,
        },
    )


def _value_skew_alert(
    ctx: StepContext,
    run: RunRecord,
    ref: ObjectRef,
    skews: list[ValueSkew],
    outputs: dict[str, str],
) -> Alert:
    """The world moved: the file is accepted and retrains, and people are told what moved."""
    return Alert(
        dataset=run.dataset,
        run_id=run.run_id,
        step=STEP,
        severity="WARNING",
        summary=(
            f"value skew in {ref.uri}: {_briefs(skews, _SUMMARY_SKEWS)}; accepted, the "
            "model retrains on all accepted data with it"
        ),
        details={
            "value_skews": [skew.brief() for skew in skews[:_ALERT_FINDINGS]],
            **{key: outputs[key] for key in ("report", "manifest") if key in outputs},
        },
        at=ctx.clock(),
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
            "blocking": [
                {"check": finding.check.value, "feature": finding.feature}
                for finding in validation.result.errors
            ],
            "warnings": [str(f) for f in validation.result.warnings],
            "value_skews": [
                skew.model_dump(mode="json") for skew in value_skews_of(validation.result)
            ],
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
