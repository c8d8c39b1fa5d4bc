"""validate's Beam route: launch a file's statistics as an Apache Beam job, and wait.

A file that ``validation.beam`` routes to Beam (``always``, or larger than
``above_bytes``: docs/beam.md, "Routing") is not read by the function: the validate step
launches the Beam pipeline (``cascade.beam``) on it — a Dataflow Flex Template in the
cloud, the local job service's Dataflow stand-in on a laptop (``beam_runner_for``) —
records the job, and ends without publishing: the run waits on the job. When the job
ends, its message on ``job-events`` reaches ``cascade.steps.validate.finish_beam_job``,
which finishes validate from the job's ``statistics.pb`` and ``result.json`` exactly as
the in-function path does.

Once only: the job is recorded in the job index (``jobs/dataflow/<id>.json``) and then
in the step's claim before the step ends; a redelivered event finds the claim done (a
no-op) or, after a crash, its recorded job (no second launch). A crash between the
launch and the records is safe too: the job name is derived from the run id, so the
launch repeated finds the active job (ALREADY_EXISTS) instead of starting another.
"""

from __future__ import annotations

from typing import Any

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.messages import ObjectRef
from cascade.core.observability import RunLogger
from cascade.core.runs import RunRecord
from cascade.core.validation_config import ValidationConfig
from cascade.jobs.beam_records import (
    BeamJobRecord,
    BeamRunner,
    beam_output_folder,
    write_beam_job_record,
)
from cascade.jobs.beam_spec import BeamStatisticsSpec, dataflow_job_name
from cascade.steps.runner import StepOutcome
from cascade.validation.schema import schema_column_names
from cascade.validation.source import DataSource

__all__ = ["launch_statistics_job", "statistics_job_spec", "waiting_outcome"]


def statistics_job_spec(
    ctx: StepContext,
    run: RunRecord,
    source: DataSource,
    ref: ObjectRef,
    schema: Any | None,
    config: ValidationConfig,
) -> BeamStatisticsSpec:
    """What the job is given: the object at the event's generation, the dataset's
    validation config, the schema's column types (as ``validate_file`` reads with),
    and the run's output folder under ``dataflow/`` of the artifacts bucket."""
    float_features, string_features = schema_column_names(schema)
    return BeamStatisticsSpec(
        run_id=run.run_id,
        dataset=run.dataset,
        input_uri=f"gs://{ref.bucket}/{ref.name}",
        generation=ref.generation,
        uri=source.uri,
        file_format=source.file_format.value,
        validation_config=config.model_dump_json(),
        output_uri=ctx.artifacts.uri(beam_output_folder(run.run_id)),
        float_features=tuple(sorted(float_features)),
        string_features=tuple(sorted(string_features)),
        block_bytes=config.beam.block_bytes,
        record_fields=None if source.record_fields is None else tuple(sorted(source.record_fields)),
    )


def launch_statistics_job(
    ctx: StepContext,
    runner: BeamRunner,
    claim: ClaimHandle,
    run: RunRecord,
    source: DataSource,
    ref: ObjectRef,
    digest: str,
    schema: Any | None,
    config: ValidationConfig,
    log: RunLogger,
) -> StepOutcome:
    """Launch the job, index it, record it in the claim; the step ends waiting on it."""
    spec = statistics_job_spec(ctx, run, source, ref, schema, config)
    job_id = runner.submit(spec)  # a refusal is permanent (the run fails), else retried
    job_name = dataflow_job_name(run.run_id)
    output = beam_output_folder(run.run_id)
    write_beam_job_record(
        ctx.artifacts,
        BeamJobRecord(
            job_id=job_id,
            job_name=job_name,
            run_id=run.run_id,
            dataset=run.dataset,
            source=ref,
            content_digest=digest,
            output=output,
            submitted_at=ctx.clock(),
            record_fields=None if spec.record_fields is None else list(spec.record_fields),
        ),
    )
    details = {
        "source": ref.uri,
        "size": source.size,
        "beam_job": job_id,
        "beam_job_name": job_name,
        "beam_output": ctx.artifacts.uri(output),
        "content_digest": digest,
    }
    claim.record_submission(**details)
    log.info("%s (%d bytes): statistics launched as Beam job %s", ref.uri, source.size, job_id)
    return waiting_outcome(details)


def waiting_outcome(details: dict[str, Any]) -> StepOutcome:
    """validate's outcome while the Beam job runs: nothing published, the run running."""
    return StepOutcome(
        summary=(
            f"{details['source']} ({details['size']} bytes) is summarised by Beam job "
            f"{details['beam_job']}: validation finishes when the job ends"
        ),
        outputs={key: value for key, value in details.items() if key != "content_digest"},
        lineage={"source": details["source"], "beam_job": details["beam_job"]},
    )
