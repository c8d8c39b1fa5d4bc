"""transform's Beam route over an in-memory bucket: which runs go to Beam, the request and
the launch recorded once, the job's end finishing transform as the in-function path would,
and every way a job's end can fail the run.

The Beam runner is a fake with ``DataflowBeamRunner``'s interface and Dataflow's launch
semantics (a second launch of an active job name returns that job); its "job" does what
``cascade.beam.materialize`` does (reads the stored request, writes the shards under the
job's output folder with the transform package's own split code, then ``result.json``),
which the pipeline's parity tests (tests/unit/beam/test_beam_materialize.py) hold equal to
the pipeline's. The real pipeline through the local job service is
tests/e2e/test_beam_validation.py.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from cascade.beam.materialize_request import MaterializeRequest, MaterializeResult
from cascade.cli.sample_data import sample_csv
from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadInputError, InvalidConfigError, TransientError
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.job_spec import JobState, JobStatus
from cascade.core.messages import Alert, DataValidated, ObjectRef, TrainRequest
from cascade.core.paths import RunPaths
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.runs import RunRecord, Trigger
from cascade.core.training_config import TransformBeamRouting
from cascade.jobs.beam_records import (
    materialize_request_name,
    read_beam_job_record,
)
from cascade.jobs.beam_spec import BeamMaterializeSpec, BeamSpec, launch_of
from cascade.jobs.job_events import parse_job_event
from cascade.steps.reconcile import reconcile
from cascade.steps.runner import StepOutcome
from cascade.steps.training_job import handle_job_event
from cascade.steps.transform import SPLIT_STEP, handle_data_validated
from cascade.transform.catalog import read_transform
from cascade.transform.materialize import write_split_shards
from cascade.transform.spec import TransformSpec
from tests.unit.conftest import Clock
from tests.unit.transform.landing import LANDING, MemoryLanding, accept, write_pipeline_config

DATASET = "credit"
CONFIG = "label: defaulted\nproblem_type: binary\n"
ARTIFACTS = "cascade-artifacts"


@dataclass
class _Job:
    spec: BeamMaterializeSpec
    state: JobState = "queued"
    error: str = ""


@dataclass
class FakeSplitRunner:
    """Dataflow's launch semantics; ``finish`` plays ``cascade.beam.materialize``."""

    store: MemoryArtifactStore
    landing: MemoryLanding
    jobs: dict[str, _Job] = field(default_factory=dict)
    launches: int = 0
    refuse: str = ""

    def submit(self, spec: BeamSpec) -> str:
        assert isinstance(spec, BeamMaterializeSpec)
        self.launches += 1
        if self.refuse:
            raise InvalidConfigError(f"Dataflow refused the launch: {self.refuse}")
        for job_id, job in self.jobs.items():
            if launch_of(job.spec)[0] == launch_of(spec)[0] and job.state in ("queued", "running"):
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

    def _write_outputs(self, spec: BeamMaterializeSpec) -> None:
        stored = self.store.read(spec.request_uri.removeprefix(f"gs://{ARTIFACTS}/"))
        assert stored is not None
        request = MaterializeRequest.model_validate_json(stored.data)
        folder = spec.output_uri.removeprefix(f"gs://{ARTIFACTS}/")
        try:
            shards = write_split_shards(
                self.store,
                request.files,
                self.landing,
                schema=request.row_schema(),
                split=request.split,
                folder=folder,
                config=request.validation,
                newest=request.newest,
                newest_column=request.newest_column,
            )
        except BadInputError as error:
            result = MaterializeResult(status="bad_input", message=str(error))
        else:
            result = MaterializeResult(
                status="ok",
                train_files=[self.store.uri(name) for name in shards.train_names],
                eval_files=[self.store.uri(name) for name in shards.eval_names],
                train_rows=shards.train_rows,
                eval_rows=shards.eval_rows,
                newest_eval_rows=shards.newest_eval_rows,
                file_eval_rows=shards.file_eval_rows,
                duplicate_rows=shards.duplicate_rows,
            )
        self.store.write(f"{folder}/result.json", result.model_dump_json().encode())


@pytest.fixture
def landing() -> MemoryLanding:
    return MemoryLanding()


@pytest.fixture
def store(step_context: StepContext) -> MemoryArtifactStore:
    assert isinstance(step_context.artifacts, MemoryArtifactStore)
    return step_context.artifacts


@pytest.fixture
def runner(store: MemoryArtifactStore, landing: MemoryLanding) -> FakeSplitRunner:
    return FakeSplitRunner(store, landing)


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


def _configure(store: MemoryArtifactStore, beam: str) -> None:
    write_pipeline_config(
        store, DATASET, CONFIG + (f"transform:\n  beam: {beam}\n" if beam else "")
    )


def _two_files(store: MemoryArtifactStore, landing: MemoryLanding) -> None:
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=11)
    accept(store, landing, DATASET, "day-2.csv", sample_csv(200, seed=2), generation=22, order=1)


def _validated(ctx: StepContext, run_id: str) -> DataValidated:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    ctx.ledger.ensure(
        RunRecord(
            run_id=run_id,
            dataset=DATASET,
            trigger=Trigger(kind="object"),
            created_at=now,
            updated_at=now,
        )
    )
    source = ObjectRef(bucket=LANDING, name=f"{DATASET}/day-2.csv", generation=22)
    return DataValidated(dataset=DATASET, run_id=run_id, source=source)


def _transform(
    ctx: StepContext,
    runner: FakeSplitRunner,
    run_id: str = "credit-beam",
    event_id: str = "e1",
) -> StepOutcome | None:
    return handle_data_validated(
        ctx, _validated(ctx, run_id), event_id=event_id, opener=runner.landing, beam_runner=runner
    )


def _launched(ctx: StepContext, runner: FakeSplitRunner, run_id: str = "credit-beam") -> str:
    outcome = _transform(ctx, runner, run_id)
    assert outcome is not None
    assert outcome.state == "succeeded", outcome.summary
    return str(outcome.outputs["beam_job"])


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
    ctx: StepContext, runner: FakeSplitRunner, job_id: str, event_id: str = "end-1", **entry: str
) -> StepOutcome | None:
    message = parse_job_event(_end_entry(job_id, **entry))
    return handle_job_event(ctx, message, event_id=event_id, beam_runner=runner)


def _forget_the_end(store: MemoryArtifactStore, run_id: str, step: str) -> None:
    """As if the step's delivery died before completing: its claim (and its result, where
    the step's outcome is kept apart from the claim) gone."""
    for name in list(store.list_names(f"runs/{run_id}/")):
        if name.endswith(f"/{step}.json") and ("/claims/" in name or "/results/" in name):
            store.delete(name)


def _rows(store: MemoryArtifactStore, uris: list[str]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for uri in uris:
        stored = store.read(uri.removeprefix(f"gs://{ARTIFACTS}/"))
        assert stored is not None
        rows.extend(
            tuple(row.values()) for row in pq.read_table(io.BytesIO(stored.data)).to_pylist()
        )
    return sorted(rows, key=repr)


# -- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "beam",
    [
        "{always: 'yes'}",
        "{always: 1}",
        "{above_rows: true}",
        "{above_rows: 0}",
        "{above_rows: -5}",
        "{above_rows: '1000'}",
        "{above_rows: 1.5}",
        "{above_rows: 99999999999999999999999}",
        "{above_bytes: 10}",
        "[1, 2]",
        "yes",
    ],
)
def test_hostile_beam_settings_are_refused_naming_the_field(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    beam: str,
) -> None:
    _two_files(store, landing)
    _configure(store, beam)
    with pytest.raises(InvalidConfigError, match=r"transform\.beam"):
        load_pipeline_config(store, DATASET)

    outcome = _transform(step_context, runner)

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert "transform.beam" in outcome.summary
    assert runner.launches == 0


def test_beam_routing_defaults_route_nothing() -> None:
    assert not TransformBeamRouting().routes(10**15)
    assert TransformBeamRouting(above_rows=10).routes(11)
    assert not TransformBeamRouting(above_rows=10).routes(10)
    assert TransformBeamRouting(always=True).routes(0)
    with pytest.raises(ValidationError):
        TransformBeamRouting.model_validate({"always": "true"})


# -- routing and launch -------------------------------------------------------------------


@pytest.mark.parametrize(("above_rows", "routed"), [(499, True), (500, False)])
def test_a_snapshot_goes_to_beam_only_above_the_threshold(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    above_rows: int,
    routed: bool,
) -> None:
    _two_files(store, landing)  # 500 rows
    _configure(store, f"{{above_rows: {above_rows}}}")

    outcome = _transform(step_context, runner)

    assert outcome is not None
    assert outcome.state == "succeeded"
    assert runner.launches == (1 if routed else 0)
    assert ("beam_job" in outcome.outputs) is routed
    assert len(_bus(step_context).of_type(TrainRequest)) == (0 if routed else 1)
    assert (read_transform(store, "credit-beam") is None) is routed


def test_always_sends_even_a_small_snapshot(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
) -> None:
    accept(store, landing, DATASET, "day-1.csv", sample_csv(40, seed=1), generation=11)
    _configure(store, "{always: true}")

    _launched(step_context, runner)

    assert runner.launches == 1


def test_a_routed_run_stores_its_request_records_the_job_and_waits_without_publishing(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")

    outcome = _transform(step_context, runner)

    assert outcome is not None
    assert outcome.run_state is None
    assert _bus(step_context).published == []
    run = step_context.ledger.get("credit-beam")
    assert run is not None
    assert run.state == "running"
    [(job_id, job)] = runner.jobs.items()
    request_name = materialize_request_name("credit-beam")
    assert job.spec == BeamMaterializeSpec(
        run_id="credit-beam",
        dataset=DATASET,
        request_uri=f"gs://{ARTIFACTS}/dataflow/inputs/credit-beam/materialize.json",
        output_uri=f"gs://{ARTIFACTS}/dataflow/outputs/credit-beam/transform",
    )
    stored = store.read(request_name)
    assert stored is not None
    request = MaterializeRequest.model_validate_json(stored.data)
    assert [(f.uri, f.generation, f.rows) for f in request.files] == [
        (f"gs://{LANDING}/{DATASET}/day-1.csv", 11, 300),
        (f"gs://{LANDING}/{DATASET}/day-2.csv", 22, 200),
    ]
    assert request.label.name == "defaulted"
    assert [f.generation for f in request.newest] == [22]  # no model serves: the last file
    record = read_beam_job_record(store, job_id)
    assert record is not None
    assert record.kind == SPLIT_STEP
    assert record.source == ObjectRef(
        bucket=ARTIFACTS, name=request_name, generation=stored.generation
    )
    assert record.output == "dataflow/outputs/credit-beam/transform"
    claim = step_context.claims.get("credit-beam", "transform")
    assert claim is not None
    assert claim.submitted["beam_job"] == job_id
    assert claim.submitted["rows"] == 500
    assert read_transform(store, "credit-beam") is None
    assert store.read(f"{RunPaths('credit-beam').step_dir('transform')}/snapshot.json") is not None


def test_a_redelivered_event_launches_no_second_job(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    _launched(step_context, runner)

    assert _transform(step_context, runner, event_id="e1-again") is None
    assert runner.launches == 1


def test_a_takeover_after_a_crash_resumes_the_recorded_job(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    clock: Clock,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    job_id = _launched(step_context, runner)
    # The step died after recording its job, before completing its claim.
    claim = step_context.claims.get("credit-beam", "transform")
    assert claim is not None
    _forget_the_end(store, "credit-beam", "transform")
    held = step_context.claims.acquire(
        "credit-beam", "transform", owner="dead", now=clock.now, lease=timedelta(seconds=60)
    )
    assert isinstance(held, ClaimHandle)
    held.record_submission(**claim.submitted)
    clock.advance(120)

    outcome = _transform(step_context, runner, event_id="e2")

    assert outcome is not None
    assert outcome.outputs["beam_job"] == job_id
    assert runner.launches == 1


def test_a_crash_between_launch_and_record_finds_the_stored_request_and_the_active_job(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    clock: Clock,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    job_id = _launched(step_context, runner)
    request = store.read(materialize_request_name("credit-beam"))
    assert request is not None
    # The step died right after the launch; meanwhile the dataset's config changed.
    _forget_the_end(store, "credit-beam", "transform")
    step_context.claims.acquire(
        "credit-beam", "transform", owner="dead", now=clock.now, lease=timedelta(seconds=60)
    )
    write_pipeline_config(
        store, DATASET, CONFIG + "transform:\n  eval_fraction: 0.5\n  beam: {always: true}\n"
    )
    clock.advance(120)

    again = _transform(step_context, runner, event_id="e2")

    assert again is not None
    assert again.outputs["beam_job"] == job_id
    assert len(runner.jobs) == 1
    kept = store.read(materialize_request_name("credit-beam"))
    assert kept is not None
    assert (kept.generation, kept.data) == (request.generation, request.data)  # created once


def test_a_refused_launch_fails_the_run_with_the_reason(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    runner.refuse = "parameter 'request' does not match"

    outcome = _transform(step_context, runner)

    assert outcome is not None
    assert outcome.run_state == "failed"
    [alert] = _bus(step_context).of_type(Alert)
    assert "parameter 'request' does not match" in alert.summary


# -- completion ---------------------------------------------------------------------------


def _comparable(spec: TransformSpec) -> dict[str, object]:
    return spec.model_dump(exclude={"run_id", "created_at", "train_files", "eval_files"})


def test_a_finished_job_finishes_transform_as_the_function_would(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    clock: Clock,
) -> None:
    _two_files(store, landing)
    _configure(store, "")
    in_function = _transform(step_context, runner, run_id="credit-function")
    assert in_function is not None
    _configure(store, "{always: true}")
    clock.advance(1)  # a later snapshot of the same files: not one to hand over to
    job_id = _launched(step_context, runner)
    runner.finish(job_id)

    outcome = _job_ended(step_context, runner, job_id)

    assert outcome is not None
    assert outcome.state == "succeeded", outcome.summary
    beam, function = (read_transform(store, run) for run in ("credit-beam", "credit-function"))
    assert beam is not None
    assert function is not None
    assert _comparable(beam) == _comparable(function)
    assert all(
        uri.startswith(f"gs://{ARTIFACTS}/dataflow/outputs/credit-beam/transform/train/")
        for uri in beam.train_files
    )
    assert _rows(store, beam.train_files) == _rows(store, function.train_files)
    assert _rows(store, beam.eval_files) == _rows(store, function.eval_files)
    requests = _bus(step_context).of_type(TrainRequest)
    assert [request.run_id for request in requests] == ["credit-function", "credit-beam"]
    run = step_context.ledger.get("credit-beam")
    assert run is not None
    assert run.steps["transform"].state == "succeeded"  # the launch
    finished = run.steps[SPLIT_STEP]
    assert finished.state == "succeeded"
    assert finished.outputs["train_rows"] == function.train_rows
    assert finished.outputs["duplicates_removed"] == 0
    assert run.lineage["transform_fingerprint"] == beam.fingerprint()


def test_a_duplicate_end_event_is_a_no_op(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    job_id = _launched(step_context, runner)
    runner.finish(job_id)
    assert _job_ended(step_context, runner, job_id, event_id="end-1") is not None

    assert _job_ended(step_context, runner, job_id, event_id="end-2") is None
    assert len(_bus(step_context).of_type(TrainRequest)) == 1


@pytest.mark.parametrize(("state", "error"), [("failed", "worker lost"), ("cancelled", "")])
def test_a_failed_or_cancelled_job_fails_the_run_and_alerts(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    state: JobState,
    error: str,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    job_id = _launched(step_context, runner)
    runner.finish(job_id, state, error)

    outcome = _job_ended(step_context, runner, job_id, severity="ERROR", text="Workflow failed.")

    assert outcome is not None
    assert outcome.run_state == "failed"
    [alert] = _bus(step_context).of_type(Alert)
    assert job_id in alert.summary
    assert state in alert.summary
    assert error in alert.summary
    assert "Workflow failed." in alert.summary
    assert _bus(step_context).of_type(TrainRequest) == []
    assert read_transform(store, "credit-beam") is None


def test_bad_input_found_by_the_pipeline_fails_the_run_with_its_message(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    uri = f"gs://{LANDING}/{DATASET}/day-2.csv"
    landing.objects[(uri, 22)] = b"age,income\n41,12\nforty,13\n"  # not what validate read
    job_id = _launched(step_context, runner)
    runner.finish(job_id)
    result = store.read("dataflow/outputs/credit-beam/transform/result.json")
    assert result is not None
    message = MaterializeResult.model_validate_json(result.data).message
    assert f"{uri}#22" in message

    outcome = _job_ended(step_context, runner, job_id)

    assert outcome is not None
    assert outcome.run_state == "failed"
    [alert] = _bus(step_context).of_type(Alert)
    assert message in alert.summary


_OUT = "dataflow/outputs/credit-beam/transform"


def _tamper_result(store: MemoryArtifactStore, **changes: object) -> None:
    stored = store.read(f"{_OUT}/result.json")
    assert stored is not None
    result = MaterializeResult.model_validate_json(stored.data).model_copy(update=changes)
    store.write(f"{_OUT}/result.json", result.model_dump_json().encode())


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ("missing", "without writing"),
        ("not json", "not the pipeline's result"),
        ("unknown status", "not the pipeline's result"),
        ("elsewhere", "is not a train shard of job"),
        ("another run", "is not a train shard of job"),
        ("dot dot", "is not a train shard of job"),
        ("eval as train", "is not a train shard of job"),
        ("shard missing", "does not exist"),
        ("shard twice", "listed twice"),
        ("counts", "do not match"),
        ("request changed", "was changed after the launch"),
    ],
)
def test_a_job_without_usable_outputs_fails_the_run_naming_the_object(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    tamper: str,
    why: str,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    job_id = _launched(step_context, runner)
    runner.finish(job_id)
    stored = store.read(f"{_OUT}/result.json")
    assert stored is not None
    good = MaterializeResult.model_validate_json(stored.data)
    train = f"gs://{ARTIFACTS}/{_OUT}/train/"
    if tamper == "missing":
        store.delete(f"{_OUT}/result.json")
    elif tamper == "not json":
        store.write(f"{_OUT}/result.json", b"not json")
    elif tamper == "unknown status":
        store.write(f"{_OUT}/result.json", b'{"status": "maybe"}')
    elif tamper == "elsewhere":
        _tamper_result(store, train_files=["gs://elsewhere/x.parquet"])
    elif tamper == "another run":
        _tamper_result(store, train_files=[good.train_files[0].replace("credit-beam", "other")])
    elif tamper == "dot dot":
        _tamper_result(store, train_files=[f"{train}../../../../runs/x/model.parquet"])
    elif tamper == "eval as train":
        _tamper_result(store, train_files=good.eval_files)
    elif tamper == "shard missing":
        _tamper_result(store, train_files=[*good.train_files, f"{train}part-99999.parquet"])
    elif tamper == "shard twice":
        _tamper_result(store, train_files=[*good.train_files, good.train_files[0]])
    elif tamper == "counts":
        _tamper_result(store, file_eval_rows=[1])
    else:
        name = materialize_request_name("credit-beam")
        request = store.read(name)
        assert request is not None
        store.write(name, request.data.replace(b'"rows_per_shard": 500000', b'"rows_per_shard": 7'))

    outcome = _job_ended(step_context, runner, job_id)

    assert outcome is not None
    assert outcome.run_state == "failed"
    assert why in outcome.summary
    assert _bus(step_context).of_type(TrainRequest) == []


def test_an_end_announced_before_the_state_is_visible_is_retried(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
) -> None:
    _two_files(store, landing)
    _configure(store, "{always: true}")
    job_id = _launched(step_context, runner)

    with pytest.raises(TransientError):
        _job_ended(step_context, runner, job_id)
    assert _job_ended(step_context, runner, job_id, text="Starting 1 workers.") is None
    assert _bus(step_context).published == []


@pytest.mark.parametrize("job_id", ["1234", "../../runs/x", "a/b", "x" * 200, "-rf", "a\nb"])
def test_an_end_of_a_job_cascade_did_not_launch_is_ignored(
    step_context: StepContext, runner: FakeSplitRunner, job_id: str
) -> None:
    assert _job_ended(step_context, runner, job_id) is None
    assert _bus(step_context).published == []


def test_reconcile_finishes_a_run_whose_end_event_was_lost(
    step_context: StepContext,
    store: MemoryArtifactStore,
    landing: MemoryLanding,
    runner: FakeSplitRunner,
    clock: Clock,
) -> None:
    step_context.landing = MemoryArtifactStore(LANDING, clock=clock)  # nothing newly landed
    _two_files(store, landing)
    _configure(store, "{always: true}")
    job_id = _launched(step_context, runner)
    clock.advance(700)
    report = reconcile(step_context, stale_after=timedelta(seconds=600), beam_runner=runner)
    assert report.beam_jobs_polled == [job_id]
    assert _bus(step_context).published == []  # still running: nothing to do

    runner.finish(job_id)
    clock.advance(700)
    report = reconcile(step_context, stale_after=timedelta(seconds=600), beam_runner=runner)

    assert report.runs_resumed == ["credit-beam"]
    [request] = _bus(step_context).of_type(TrainRequest)
    assert request.run_id == "credit-beam"
    assert runner.launches == 1
    run = step_context.ledger.get("credit-beam")
    assert run is not None
    assert run.steps[SPLIT_STEP].state == "succeeded"
