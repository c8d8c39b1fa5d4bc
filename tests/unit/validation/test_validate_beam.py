"""validate's Beam route over an in-memory Cloud Storage: which files go to Beam, the
launch recorded once, the job's end finishing validate as the in-function path would.

The Beam runner here is a fake with ``DataflowBeamRunner``'s interface and Dataflow's
launch semantics (a second launch of an active job name returns that job); its "job"
writes what ``cascade.beam.pipeline`` writes (``statistics.pb`` named by the file's
uri, then ``result.json``), computed with the validation package's own statistics code,
which the pipeline's parity tests (tests/unit/beam/) hold equal to the pipeline's. The
real pipeline through the local job service is tests/e2e/test_beam_validation.py.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from cascade.cli.run_view import validation_verdict
from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import (
    BadInputError,
    InvalidConfigError,
    StepInProgressError,
    TransientError,
)
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.job_spec import JobState, JobStatus
from cascade.core.messages import Alert, DataValidated
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.runs import run_id_for_object
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import BeamRouting, ValidationConfig
from cascade.jobs.beam_records import (
    BeamResult,
    beam_job_record_name,
    read_beam_job_record,
)
from cascade.jobs.beam_spec import BeamStatisticsSpec, dataflow_job_name
from cascade.jobs.job_events import JobLogEntry, parse_job_event
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes
from cascade.steps.quarantine_review import quarantined_runs
from cascade.steps.reconcile import reconcile
from cascade.steps.runner import StepOutcome
from cascade.steps.training_job import handle_job_event
from cascade.steps.validate import BEAM_STEP, handle_object_finalized
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.manifest import AcceptedFile
from cascade.validation.names import FileFormat
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics, statistics_proto
from cascade.validation.tfmd import statistics_pb2
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import validate_step_context

LANDING, ARTIFACTS = "cascade-landing", "cascade-artifacts"
BIG, SMALL = "big", "small"  # the same bytes: routed to Beam, and validated in-function


@dataclass
class _Job:
    spec: BeamStatisticsSpec
    state: JobState = "queued"
    error: str = ""


@dataclass
class FakeBeamRunner:
    """Dataflow's launch semantics; ``finish`` plays the pipeline."""

    storage: FakeStorageClient
    jobs: dict[str, _Job] = field(default_factory=dict)
    launches: int = 0
    refuse: str = ""

    def submit(self, spec: BeamStatisticsSpec) -> str:
        self.launches += 1
        if self.refuse:
            raise InvalidConfigError(f"Dataflow refused the launch: {self.refuse}")
        for job_id, job in self.jobs.items():
            same_name = dataflow_job_name(job.spec.run_id) == dataflow_job_name(spec.run_id)
            if same_name and job.state in ("queued", "running"):
                return job_id  # ALREADY_EXISTS: the active job's id
        job_id = f"2026-12-01_00_00_00-{len(self.jobs) + 1:019d}"
        self.jobs[job_id] = _Job(spec)
        return job_id

    def get(self, job_id: str) -> JobStatus:
        job = self.jobs[job_id]
        return JobStatus(name=job_id, state=job.state, error=job.error)

    def finish(self, job_id: str, state: JobState = "succeeded", error: str = "") -> None:
        job = self.jobs[job_id]
        if state == "succeeded":
            self._write_outputs(job.spec)
        job.state, job.error = state, error

    def _write_outputs(self, spec: BeamStatisticsSpec) -> None:
        bucket, _, name = spec.input_uri.removeprefix("gs://").partition("/")
        landing = ArtifactStore(self.storage, bucket)  # type: ignore[arg-type]
        config = ValidationConfig.model_validate_json(spec.validation_config)
        source = DataSource(
            uri=spec.uri,
            file_format=FileFormat(spec.file_format),
            size=None,
            open=lambda: landing.open_read(name, generation=spec.generation),
            record_fields=None if spec.record_fields is None else frozenset(spec.record_fields),
        )
        out_bucket, _, folder = spec.output_uri.removeprefix("gs://").partition("/")
        outputs = ArtifactStore(self.storage, out_bucket)  # type: ignore[arg-type]
        try:
            summary = compute_statistics(
                source,
                config,
                float_features=frozenset(spec.float_features),
                string_features=frozenset(spec.string_features),
            )
        except BadInputError as error:
            result: dict[str, object] = {"status": "bad_input", "message": str(error)}
        else:
            statistics = statistics_proto(summary, config, name=spec.uri)
            outputs.write(f"{folder}/statistics.pb", statistics.SerializeToString())
            result = {"status": "ok", "num_examples": summary.num_examples, "blocks": 1}
        outputs.write(f"{folder}/result.json", json.dumps(result).encode())


@pytest.fixture
def storage() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def ctx(storage: FakeStorageClient, clock: Clock) -> StepContext:
    return validate_step_context(storage, clock)


@pytest.fixture
def runner(storage: FakeStorageClient) -> FakeBeamRunner:
    return FakeBeamRunner(storage)


def _csv(seed: int, rows: int = 600) -> bytes:
    generator = random.Random(seed)
    lines = ["amount,age,city"] + [
        f"{generator.gauss(100, 10):.3f},{generator.randint(20, 60)},{generator.choice(('a', 'b'))}"
        for _ in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def _configure(ctx: StepContext, dataset: str, beam: str) -> None:
    text = f"validation:\n  beam: {beam}\n" if beam else "validation: {}\n"
    ctx.artifacts.write(DatasetPaths(dataset).pipeline_config, text.encode())


def _land(storage: FakeStorageClient, name: str, data: bytes) -> StorageObjectEvent:
    generation = storage.put(LANDING, name, data)
    return StorageObjectEvent(
        event_id=f"event-{name}-{generation}",
        bucket=LANDING,
        name=name,
        generation=generation,
        size=len(data),
    )


def _run_id(event: StorageObjectEvent) -> str:
    return run_id_for_object(event.name.split("/")[0], LANDING, event.name, event.generation)


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


def _end_entry(job_id: str, *, severity: str = "INFO", text: str = "Worker pool stopped.") -> bytes:
    """A Dataflow job message as the log sink forwards it (and the local job service)."""
    return json.dumps(
        {
            "insertId": f"end-{job_id}",
            "logName": "projects/p/logs/dataflow.googleapis.com%2Fjob-message",
            "resource": {
                "type": "dataflow_step",
                "labels": {"job_id": job_id, "job_name": "n", "project_id": "p", "region": "r"},
            },
            "severity": severity,
            "textPayload": text,
        }
    ).encode()


def _job_ended(
    ctx: StepContext, runner: FakeBeamRunner, job_id: str, event_id: str = "end-1", **entry: str
) -> StepOutcome | None:
    message = parse_job_event(_end_entry(job_id, **entry))
    return handle_job_event(ctx, message, event_id=event_id, beam_runner=runner)


def _launched(ctx: StepContext, runner: FakeBeamRunner, name: str, data: bytes) -> tuple[str, str]:
    event = _land(runner.storage, name, data)
    outcome = handle_object_finalized(ctx, event, beam_runner=runner)
    assert outcome is not None
    return _run_id(event), str(outcome.outputs["beam_job"])


# -- routing ----------------------------------------------------------------------------


@pytest.mark.parametrize(("above", "routed"), [(0, True), (1, False)])
def test_a_file_goes_to_beam_only_above_the_threshold(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner, above: int, routed: bool
) -> None:
    data = _csv(1)
    _configure(ctx, BIG, f"{{above_bytes: {len(data) - 1 + above}}}")
    event = _land(storage, f"{BIG}/day-1.csv", data)

    outcome = handle_object_finalized(ctx, event, beam_runner=runner)

    assert outcome is not None
    assert runner.launches == (1 if routed else 0)
    assert ("beam_job" in outcome.outputs) is routed
    assert len(_bus(ctx).of_type(DataValidated)) == (0 if routed else 1)


def test_always_sends_even_a_tiny_file_and_no_threshold_sends_none(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner
) -> None:
    _configure(ctx, BIG, "{always: true}")
    _configure(ctx, SMALL, "")
    handle_object_finalized(ctx, _land(storage, f"{BIG}/a.csv", b"x\n1\n"), beam_runner=runner)
    handle_object_finalized(ctx, _land(storage, f"{SMALL}/a.csv", _csv(1)), beam_runner=runner)

    assert runner.launches == 1
    [spec] = [job.spec for job in runner.jobs.values()]
    assert spec.dataset == BIG


def test_a_routed_file_is_recorded_and_the_run_waits_without_publishing(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner
) -> None:
    _configure(ctx, BIG, "{always: true, block_bytes: 1048576}")
    event = _land(storage, f"{BIG}/day-1.csv", _csv(1))

    outcome = handle_object_finalized(ctx, event, beam_runner=runner)

    assert outcome is not None
    assert outcome.state == "succeeded"
    assert outcome.run_state is None
    assert _bus(ctx).published == []
    run = ctx.ledger.get(_run_id(event))
    assert run is not None
    assert run.state == "running"
    [(job_id, job)] = runner.jobs.items()
    spec = job.spec
    assert spec.input_uri == f"gs://{LANDING}/{BIG}/day-1.csv"
    assert spec.generation == event.generation
    assert spec.uri == f"gs://{LANDING}/{BIG}/day-1.csv#{event.generation}"
    assert spec.output_uri == f"gs://{ARTIFACTS}/dataflow/outputs/{run.run_id}/validate"
    assert spec.block_bytes == 1048576
    assert ValidationConfig.model_validate_json(spec.validation_config).beam.always is True
    claim = ctx.claims.get(run.run_id, "validate")
    assert claim is not None
    assert claim.submitted["beam_job"] == job_id
    record = read_beam_job_record(ctx.artifacts, job_id)
    assert record is not None
    assert (record.run_id, record.source.generation) == (run.run_id, event.generation)
    assert ctx.artifacts.read(DatasetPaths(BIG).accepted_manifest(run.run_id)) is None


def test_a_redelivered_event_launches_no_second_job(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner
) -> None:
    _configure(ctx, BIG, "{always: true}")
    event = _land(storage, f"{BIG}/day-1.csv", _csv(1))
    handle_object_finalized(ctx, event, beam_runner=runner)

    assert handle_object_finalized(ctx, event, beam_runner=runner) is None
    assert runner.launches == 1


def test_a_takeover_after_a_crash_resumes_the_recorded_job(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner, clock: Clock
) -> None:
    _configure(ctx, BIG, "{always: true}")
    event = _land(storage, f"{BIG}/day-1.csv", _csv(1))
    run_id = _run_id(event)
    handle_object_finalized(ctx, event, beam_runner=runner)
    # The step died after recording its job, before completing its claim.
    claim = ctx.claims.get(run_id, "validate")
    assert claim is not None
    ctx.artifacts.delete(RunPaths(run_id).claim("validate"))
    ctx.artifacts.delete(RunPaths(run_id).result("validate"))
    held = ctx.claims.acquire(
        run_id, "validate", owner="dead", now=clock.now, lease=timedelta(seconds=60)
    )
    assert isinstance(held, ClaimHandle)
    held.record_submission(**claim.submitted)
    clock.advance(120)

    outcome = handle_object_finalized(ctx, event, beam_runner=runner)

    assert outcome is not None
    assert outcome.outputs["beam_job"] == claim.submitted["beam_job"]
    assert runner.launches == 1


def test_a_crash_between_launch_and_record_finds_the_active_job(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner, clock: Clock
) -> None:
    _configure(ctx, BIG, "{always: true}")
    event = _land(storage, f"{BIG}/day-1.csv", _csv(1))
    run_id = _run_id(event)
    first = handle_object_finalized(ctx, event, beam_runner=runner)
    assert first is not None
    # The step died right after the launch: no claim record of the job survives.
    ctx.artifacts.delete(RunPaths(run_id).claim("validate"))
    ctx.artifacts.delete(RunPaths(run_id).result("validate"))
    ctx.claims.acquire(run_id, "validate", owner="dead", now=clock.now, lease=timedelta(seconds=60))
    clock.advance(120)

    again = handle_object_finalized(ctx, event, beam_runner=runner)

    assert again is not None
    assert again.outputs["beam_job"] == first.outputs["beam_job"]
    assert len(runner.jobs) == 1


def test_a_concurrent_delivery_waits_for_the_one_holding_the_claim(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner, clock: Clock
) -> None:
    _configure(ctx, BIG, "{always: true}")
    event = _land(storage, f"{BIG}/day-1.csv", _csv(1))
    ctx.claims.acquire(
        _run_id(event), "validate", owner="other", now=clock.now, lease=timedelta(minutes=5)
    )

    with pytest.raises(StepInProgressError):
        handle_object_finalized(ctx, event, beam_runner=runner)
    assert runner.launches == 0


def test_a_refused_launch_fails_the_run_with_the_reason(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner
) -> None:
    _configure(ctx, BIG, "{always: true}")
    runner.refuse = "parameter 'input' does not match"
    event = _land(storage, f"{BIG}/day-1.csv", _csv(1))

    outcome = handle_object_finalized(ctx, event, beam_runner=runner)

    assert outcome is not None
    assert outcome.run_state == "failed"
    [alert] = _bus(ctx).of_type(Alert)
    assert "parameter 'input' does not match" in alert.summary


def test_a_header_too_wide_is_refused_in_the_function_without_a_job(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner
) -> None:
    ctx.artifacts.write(
        DatasetPaths(BIG).pipeline_config,
        b"validation:\n  max_features: 2\n  beam: {always: true}\n",
    )
    outcome = handle_object_finalized(
        ctx, _land(storage, f"{BIG}/wide.csv", _csv(1)), beam_runner=runner
    )

    assert outcome is not None
    assert outcome.state == "rejected"
    assert runner.launches == 0


# -- completion -------------------------------------------------------------------------


def _stats_without_name(data: bytes) -> statistics_pb2.DatasetFeatureStatisticsList:
    parsed = statistics_pb2.DatasetFeatureStatisticsList.FromString(data)
    parsed.datasets[0].name = ""
    return parsed


def test_a_finished_job_finishes_validate_as_the_function_would(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner
) -> None:
    _configure(ctx, BIG, "{always: true}")
    _configure(ctx, SMALL, "")
    for day in (1, 2):  # the second file is judged against the first one's baseline
        data = _csv(day)
        _, job_id = _launched(ctx, runner, f"{BIG}/day-{day}.csv", data)
        runner.finish(job_id)
        outcome = _job_ended(ctx, runner, job_id)
        assert outcome is not None
        assert outcome.state == "succeeded"
        small = handle_object_finalized(ctx, _land(storage, f"{SMALL}/day-{day}.csv", data))
        assert small is not None
        assert small.state == "succeeded"

    validated = _bus(ctx).of_type(DataValidated)
    assert sorted(message.dataset for message in validated) == [BIG, BIG, SMALL, SMALL]
    big, small_run = (
        [m.run_id for m in validated if m.dataset == dataset][-1] for dataset in (BIG, SMALL)
    )
    for name in ("stats.pb", "anomalies.pbtxt", "schema.pbtxt"):
        left = ctx.artifacts.read(f"{RunPaths(big).step_dir('validation')}/{name}")
        right = ctx.artifacts.read(f"{RunPaths(small_run).step_dir('validation')}/{name}")
        assert left is not None
        assert right is not None
        if name == "stats.pb":
            assert _stats_without_name(left.data) == _stats_without_name(right.data)
        else:
            assert left.data == right.data
    baselines = [BaselineStore(ctx.artifacts, dataset).load() for dataset in (BIG, SMALL)]
    assert baselines[0] is not None
    assert baselines[1] is not None
    assert baselines[0].files == baselines[1].files == 2
    assert baselines[0].summary == baselines[1].summary
    manifests = [
        ctx.artifacts.read_model(DatasetPaths(ds).accepted_manifest(run), AcceptedFile)
        for ds, run in ((BIG, big), (SMALL, small_run))
    ]
    assert manifests[0] is not None
    assert manifests[1] is not None
    assert manifests[0][0].num_examples == manifests[1][0].num_examples == 600
    assert manifests[0][0].content_digest == manifests[1][0].content_digest
    run = ctx.ledger.get(big)
    assert run is not None
    assert run.steps[BEAM_STEP].state == "succeeded"


def test_a_stream_file_s_job_and_its_end_split_out_the_same_records(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner
) -> None:
    """The job is given the stream schema's fields read at launch, and the end splits
    out records by those, not by a schema object changed while the job ran."""
    _configure(ctx, BIG, "{always: true}")
    stream_schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "amount", "type": "double"}, {"name": "city", "type": "string"}],
    }
    ctx.artifacts.write(DatasetPaths(BIG).stream_schema, json.dumps(stream_schema).encode())
    records = [json.dumps({"amount": i * 1.5, "city": f"c{i % 4}"}).encode() for i in range(80)]
    records[9] = json.dumps({"amount": 1.0, "city": "x", "channel": "web"}).encode()
    data = avro_file_bytes(
        "projects/p/subscriptions/s",
        [Message(f"m{i}", datetime(2026, 12, 1, tzinfo=UTC), {}, r) for i, r in enumerate(records)],
    )
    run_id, job_id = _launched(ctx, runner, f"{BIG}/stream-2026-12-01/00_00_00Z_0b7e.avro", data)
    assert runner.jobs[job_id].spec.record_fields == ("amount", "city")
    stream_schema["fields"].append({"name": "channel", "type": ["null", "string"]})
    ctx.artifacts.write(DatasetPaths(BIG).stream_schema, json.dumps(stream_schema).encode())
    runner.finish(job_id)

    outcome = _job_ended(ctx, runner, job_id)

    assert outcome is not None
    assert outcome.state == "succeeded"
    assert (outcome.outputs["records_landed"], outcome.outputs["records_rejected"]) == (80, 1)
    manifest = ctx.artifacts.read_model(DatasetPaths(BIG).accepted_manifest(run_id), AcceptedFile)
    assert manifest is not None
    assert (manifest[0].num_examples, manifest[0].record_fields) == (79, ["amount", "city"])


def test_a_duplicate_end_event_is_a_no_op(ctx: StepContext, runner: FakeBeamRunner) -> None:
    _configure(ctx, BIG, "{always: true}")
    _, job_id = _launched(ctx, runner, f"{BIG}/day-1.csv", _csv(1))
    runner.finish(job_id)
    assert _job_ended(ctx, runner, job_id, event_id="end-1") is not None

    assert _job_ended(ctx, runner, job_id, event_id="end-2") is None
    assert len(_bus(ctx).of_type(DataValidated)) == 1
    stored = BaselineStore(ctx.artifacts, BIG).load()
    assert stored is not None
    assert stored.files == 1


@pytest.mark.parametrize(("state", "error"), [("failed", "worker lost"), ("cancelled", "")])
def test_a_failed_or_cancelled_job_fails_the_run_and_alerts(
    ctx: StepContext, runner: FakeBeamRunner, state: JobState, error: str
) -> None:
    _configure(ctx, BIG, "{always: true}")
    run_id, job_id = _launched(ctx, runner, f"{BIG}/day-1.csv", _csv(1))
    runner.finish(job_id, state, error)

    outcome = _job_ended(ctx, runner, job_id, severity="ERROR", text="Workflow failed.")

    assert outcome is not None
    assert outcome.run_state == "failed"
    [alert] = _bus(ctx).of_type(Alert)
    assert job_id in alert.summary
    assert state in alert.summary
    assert error in alert.summary
    assert "Workflow failed." in alert.summary  # the job message says why, Dataflow's state not
    run = ctx.ledger.get(run_id)
    assert run is not None
    assert run.state == "failed"
    assert _bus(ctx).of_type(DataValidated) == []


def test_bad_input_found_by_the_pipeline_fails_the_run_with_its_message(
    ctx: StepContext, runner: FakeBeamRunner
) -> None:
    _configure(ctx, BIG, "{always: true}")
    run_id, job_id = _launched(ctx, runner, f"{BIG}/broken.csv", b"a,b\n1,2\n3\n")
    runner.finish(job_id)
    result = ctx.artifacts.read(f"dataflow/outputs/{run_id}/validate/result.json")
    assert result is not None
    message = BeamResult.model_validate_json(result.data).message

    outcome = _job_ended(ctx, runner, job_id)

    assert outcome is not None
    assert outcome.run_state == "failed"
    [alert] = _bus(ctx).of_type(Alert)
    assert message in alert.summary
    assert "row 2 (line 3)" in alert.summary
    assert f"gs://{LANDING}/{BIG}/broken.csv" in alert.summary


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (None, "without writing"),
        (b"not json", "not the pipeline's result"),
        (b'{"status": "maybe"}', "not the pipeline's result"),
    ],
)
def test_a_job_without_a_usable_result_fails_the_run(
    ctx: StepContext, runner: FakeBeamRunner, result: bytes | None, why: str
) -> None:
    _configure(ctx, BIG, "{always: true}")
    run_id, job_id = _launched(ctx, runner, f"{BIG}/day-1.csv", _csv(1))
    runner.finish(job_id)
    name = f"dataflow/outputs/{run_id}/validate/result.json"
    if result is None:
        ctx.artifacts.delete(name)
    else:
        ctx.artifacts.write(name, result)

    outcome = _job_ended(ctx, runner, job_id)

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert why in outcome.summary


def test_statistics_of_another_file_are_refused(ctx: StepContext, runner: FakeBeamRunner) -> None:
    _configure(ctx, BIG, "{always: true}")
    run_id, job_id = _launched(ctx, runner, f"{BIG}/day-1.csv", _csv(1))
    runner.finish(job_id)
    name = f"dataflow/outputs/{run_id}/validate/statistics.pb"
    stored = ctx.artifacts.read(name)
    assert stored is not None
    other = statistics_pb2.DatasetFeatureStatisticsList.FromString(stored.data)
    other.datasets[0].name = "gs://elsewhere/x.csv#1"
    ctx.artifacts.write(name, other.SerializeToString())

    outcome = _job_ended(ctx, runner, job_id)

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert "holds no statistics of" in outcome.summary


def test_an_end_announced_before_the_state_is_visible_is_retried(
    ctx: StepContext, runner: FakeBeamRunner
) -> None:
    _configure(ctx, BIG, "{always: true}")
    _, job_id = _launched(ctx, runner, f"{BIG}/day-1.csv", _csv(1))

    with pytest.raises(TransientError):
        _job_ended(ctx, runner, job_id)
    assert _job_ended(ctx, runner, job_id, text="Starting 1 workers.") is None
    assert _bus(ctx).published == []


@pytest.mark.parametrize(
    "job_id", ["1234", "../../runs/x", "a/b", "x" * 200, "-rf", "a\nb", "%2e%2e"]
)
def test_an_end_of_a_job_cascade_did_not_launch_is_ignored(
    ctx: StepContext, runner: FakeBeamRunner, job_id: str
) -> None:
    assert _job_ended(ctx, runner, job_id) is None
    assert _bus(ctx).published == []


def test_reconcile_finishes_a_run_whose_end_event_was_lost(
    ctx: StepContext, runner: FakeBeamRunner, clock: Clock
) -> None:
    _configure(ctx, BIG, "{always: true}")
    run_id, job_id = _launched(ctx, runner, f"{BIG}/day-1.csv", _csv(1))
    clock.advance(700)
    report = reconcile(ctx, stale_after=timedelta(seconds=600), beam_runner=runner)
    assert report.beam_jobs_polled == [job_id]
    assert _bus(ctx).of_type(DataValidated) == []  # still running: nothing to do

    runner.finish(job_id)
    clock.advance(700)
    report = reconcile(ctx, stale_after=timedelta(seconds=600), beam_runner=runner)

    assert report.runs_resumed == [run_id]
    [message] = _bus(ctx).of_type(DataValidated)
    assert message.run_id == run_id
    assert runner.launches == 1


def test_parse_keeps_the_resource_type() -> None:
    entry = parse_job_event(_end_entry("2026-12-01_00_00_00-1"))
    assert isinstance(entry, JobLogEntry)
    assert entry.resource_type == "dataflow_step"
    assert entry.announces_end


# -- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "beam",
    [
        "{always: 'yes'}",
        "{always: 1}",
        "{above_bytes: true}",
        "{above_bytes: 0}",
        "{above_bytes: -5}",
        "{above_bytes: '1e9'}",
        "{above_bytes: 1.5}",
        "{above_bytes: 99999999999999999999999}",
        "{block_bytes: 1}",
        "{block_bytes: 99999999999}",
        "{abov_bytes: 10}",
        "[1, 2]",
        "yes",
    ],
)
def test_hostile_beam_settings_are_refused_naming_the_field(
    ctx: StepContext, storage: FakeStorageClient, runner: FakeBeamRunner, beam: str
) -> None:
    _configure(ctx, BIG, beam)
    with pytest.raises(InvalidConfigError, match=r"validation\.beam"):
        load_pipeline_config(ctx.artifacts, BIG)

    outcome = handle_object_finalized(
        ctx, _land(storage, f"{BIG}/day-1.csv", _csv(1)), beam_runner=runner
    )

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert runner.launches == 0


def test_beam_routing_defaults_route_nothing() -> None:
    routing = BeamRouting()
    assert not routing.routes(10**15)
    assert BeamRouting(above_bytes=10).routes(11)
    assert not BeamRouting(above_bytes=10).routes(10)
    assert BeamRouting(always=True).routes(0)
    with pytest.raises(ValidationError):
        BeamRouting.model_validate({"always": "true"})


def test_the_index_is_named_by_the_job_id() -> None:
    name = beam_job_record_name("2026-12-01_00_00_00-1")
    assert name == "jobs/dataflow/2026-12-01_00_00_00-1.json"


def test_a_file_beam_rejected_is_listed_in_quarantine_and_its_run_shows_why(
    ctx: StepContext, runner: FakeBeamRunner
) -> None:
    """The verdict of a Beam-validated file lives in ``validate_statistics`` (``validate``
    only launched the job): quarantine review, ``cascade status`` and the report read
    the run's validation step, whichever it is."""
    _configure(ctx, BIG, "{always: true}")
    _, first = _launched(ctx, runner, f"{BIG}/day-1.csv", _csv(1))
    runner.finish(first)
    _job_ended(ctx, runner, first)
    widened = _csv(2).replace(b"amount,age,city", b"amount,age,town")  # a schema skew
    run_id, second = _launched(ctx, runner, f"{BIG}/day-2.csv", widened)
    runner.finish(second)

    outcome = _job_ended(ctx, runner, second, event_id="end-2")

    assert outcome is not None
    assert outcome.state == "rejected"
    record = ctx.ledger.get(run_id)
    assert record is not None
    assert record.steps["validate"].state == "succeeded"  # the launch
    assert record.validation is record.steps[BEAM_STEP]
    assert validation_verdict(record) == "quarantined"
    assert [q.run.run_id for q in quarantined_runs(ctx, BIG)] == [run_id]
