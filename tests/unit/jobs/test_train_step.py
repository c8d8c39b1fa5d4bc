"""The train step: one job per dataset at a time, coalescing, idempotent submission."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, StepInProgressError, TransientError
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.job_spec import TRAINING_FAILURE_FILE, TrainingFailure
from cascade.core.messages import Alert, JobEvent, ModelTrained, RunEnded, TrainRequest
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord, Trigger, run_id_for_request
from cascade.jobs.job_events import parse_job_event
from cascade.jobs.lock import TrainingLockStore, follow_up_run_id
from cascade.jobs.records import job_id_of, read_job_record
from cascade.steps.runner import StepOutcome, execute_step
from cascade.steps.train import handle_train_request
from cascade.steps.training_job import JOB_STEP, handle_job_event
from cascade.transform.catalog import latest_transform_name
from tests.unit.conftest import Clock
from tests.unit.jobs.fakes import TRANSFORM_URI, FakeJobRunner, end_job, point_latest_transform

DATASET = "credit"


@pytest.fixture
def runner() -> FakeJobRunner:
    return FakeJobRunner()


@pytest.fixture(autouse=True)
def _transformed(step_context: StepContext) -> None:
    point_latest_transform(step_context, DATASET)


def _bus(ctx: StepContext) -> RecordingBus:
    assert isinstance(ctx.bus, RecordingBus)
    return ctx.bus


def _request(request_id: str, **fields: object) -> TrainRequest:
    return TrainRequest.model_validate({"dataset": DATASET, "request_id": request_id, **fields})


def _run_id(request_id: str) -> str:
    return run_id_for_request(DATASET, request_id)


def test_a_request_submits_one_job_with_its_spec(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    request = _request("nightly", hyperparameters={"shrinkage": 0.05}, tune=True)

    outcome = handle_train_request(step_context, request, event_id="m1", runner=runner)

    assert outcome is not None
    assert outcome.state == "succeeded"
    (spec,) = runner.submitted
    run_id = _run_id("nightly")
    assert spec.run_id == run_id
    assert spec.transform_spec_uri == TRANSFORM_URI
    assert spec.output_dir == f"gs://cascade-artifacts/runs/{run_id}/training"
    assert spec.model == "boosted_trees"  # the config's default family
    assert spec.hyperparameters == {"shrinkage": 0.05}
    assert spec.tuning is not None
    assert spec.tuning.algorithm == "bayesian"
    assert "num_leaves" in [parameter.name for parameter in spec.tuning.parameters]
    assert spec.labels["cascade_run_id"] == run_id
    stored = step_context.artifacts.read(f"runs/{run_id}/training/job_spec.json")
    assert stored is not None
    assert json.loads(stored.data)["run_id"] == run_id
    record = read_job_record(step_context.artifacts, job_id_of(outcome.outputs["job_name"]))
    assert record is not None
    assert record.model_trained_by == "job-events"
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.active is not None
    assert lock.active.job_name == outcome.outputs["job_name"]


def test_duplicate_requests_submit_one_job(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    request = _request("retrain-1")

    handle_train_request(step_context, request, event_id="m1", runner=runner)
    again = handle_train_request(step_context, request, event_id="m1-redelivered", runner=runner)

    assert again is None
    assert len(runner.submitted) == 1
    run = step_context.ledger.get(_run_id("retrain-1"))
    assert run is not None
    assert run.steps["train"].attempts == 1


def test_concurrent_deliveries_of_one_request_submit_one_job(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    request = _request("retrain-2")

    def deliver(index: int) -> str:
        try:
            outcome = handle_train_request(
                step_context, request, event_id=f"m{index}", runner=runner
            )
        except StepInProgressError:
            return "retry later"
        return "duplicate" if outcome is None else outcome.state

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(deliver, range(8)))

    assert results.count("succeeded") == 1
    assert set(results) <= {"succeeded", "duplicate", "retry later"}
    assert len(runner.submitted) == 1


def test_concurrent_different_requests_start_one_job_and_one_follow_up(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    def deliver(index: int) -> str:
        for _ in range(50):
            try:
                outcome = handle_train_request(
                    step_context, _request(f"r{index}"), event_id=f"m{index}", runner=runner
                )
            except TransientError:
                continue
            assert outcome is not None
            return str(outcome.outputs.get("coalesced_into") or "submitted")
        raise AssertionError("never got through")

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(deliver, range(6)))

    assert results.count("submitted") == 1
    (active_run,) = [spec.run_id for spec in runner.submitted]
    follow_ups = {result for result in results if result != "submitted"}
    assert follow_ups == {follow_up_run_id(DATASET, active_run)}
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.pending is not None
    assert len(lock.pending.coalesced) == 5


def test_requests_during_a_job_coalesce_into_exactly_one_follow_up_started_when_it_ends(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    handle_train_request(step_context, _request("a"), event_id="ma", runner=runner)
    b = handle_train_request(step_context, _request("b", tune=True), event_id="mb", runner=runner)
    c = handle_train_request(
        step_context,
        _request("c", hyperparameters={"subsample": 0.8}),
        event_id="mc",
        runner=runner,
    )
    follow_up = follow_up_run_id(DATASET, _run_id("a"))
    assert b is not None
    assert c is not None
    assert b.outputs == c.outputs == {"coalesced_into": follow_up}
    assert len(runner.submitted) == 1
    coalesced_run = step_context.ledger.get(_run_id("b"))
    assert coalesced_run is not None
    assert coalesced_run.lineage["trained_by"] == follow_up

    end_job(step_context, runner, _run_id("a"), "log-1")

    started = [m for m in _bus(step_context).of_type(TrainRequest)]
    assert len(started) == 1
    request = started[0]
    assert isinstance(request, TrainRequest)
    assert request.run_id == follow_up
    assert request.tune is True
    assert request.hyperparameters == {"subsample": 0.8}
    handle_train_request(step_context, request, event_id="m-follow", runner=runner)
    assert [spec.run_id for spec in runner.submitted] == [_run_id("a"), follow_up]
    assert runner.spec_of(follow_up).tuning is not None
    d = handle_train_request(step_context, _request("d"), event_id="md", runner=runner)
    assert d is not None
    assert d.outputs == {"coalesced_into": follow_up_run_id(DATASET, follow_up)}
    finished = step_context.ledger.get(_run_id("a"))
    assert finished is not None
    assert finished.steps[JOB_STEP].state == "succeeded"


def test_a_job_without_requests_meanwhile_just_frees_the_lock(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    handle_train_request(step_context, _request("a"), event_id="ma", runner=runner)

    end_job(step_context, runner, _run_id("a"), "log-1")
    end_job(step_context, runner, _run_id("a"), "log-1")  # redelivered

    assert _bus(step_context).of_type(TrainRequest) == []
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.active is None
    assert lock.pending is None
    handle_train_request(step_context, _request("b"), event_id="mb", runner=runner)
    assert len(runner.submitted) == 2


def test_a_failed_job_fails_its_run_and_still_starts_the_follow_up(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    outcome = handle_train_request(step_context, _request("a"), event_id="ma", runner=runner)
    assert outcome is not None
    handle_train_request(step_context, _request("b"), event_id="mb", runner=runner)
    event = JobEvent(
        dataset=DATASET,
        run_id=_run_id("a"),
        job_name=outcome.outputs["job_name"],
        state="failed",
        error="replica exited with status 3",
    )

    handle_job_event(step_context, event, event_id="je1", runner=runner)

    run = step_context.ledger.get(_run_id("a"))
    assert run is not None
    assert run.state == "failed"
    assert "status 3" in (run.error or "")
    published = _bus(step_context).published
    # b's request was coalesced into the pending follow-up: its run ended at once.
    assert published[0] == RunEnded(dataset=DATASET, run_id=_run_id("b"), state="succeeded")
    assert [type(m) for m in published[1:]] == [Alert, TrainRequest, RunEnded]
    assert isinstance(published[2], TrainRequest)
    assert published[2].run_id == follow_up_run_id(DATASET, _run_id("a"))
    assert published[3] == RunEnded(dataset=DATASET, run_id=_run_id("a"), state="failed")


def test_a_request_without_data_fails_and_leaves_the_lock_free(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    assert isinstance(step_context.artifacts, MemoryArtifactStore)
    step_context.artifacts.delete(latest_transform_name(DATASET))

    outcome = handle_train_request(step_context, _request("early"), event_id="m", runner=runner)

    assert outcome is not None
    assert outcome.state == "failed"
    assert "no transformed data" in outcome.summary
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.active is None
    assert runner.submitted == []


def test_a_lock_whose_job_ended_unannounced_is_taken_over(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    outcome = handle_train_request(step_context, _request("a"), event_id="ma", runner=runner)
    assert outcome is not None
    runner.finish(outcome.outputs["job_name"], "failed")  # its job event was lost

    clock.advance(5)
    second = handle_train_request(step_context, _request("b"), event_id="mb", runner=runner)

    assert second is not None
    assert "coalesced_into" not in second.outputs
    assert [spec.run_id for spec in runner.submitted] == [_run_id("a"), _run_id("b")]


def test_vertex_tuning_success_publishes_the_best_trial_model(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    outcome = handle_train_request(
        step_context, _request("t", tune=True), event_id="m", runner=runner
    )
    assert outcome is not None
    name = outcome.outputs["job_name"]
    base = f"gs://cascade-artifacts/runs/{_run_id('t')}/training"
    runner.finish(
        name,
        "succeeded",
        model_dir=f"{base}/3/model",
        best_trial_id="3",
        best_metric=0.12,
        best_hyperparameters={"learning_rate": 0.01},
    )

    end_job(step_context, runner, _run_id("t"), "log-1")

    (trained,) = _bus(step_context).of_type(ModelTrained)
    assert trained == ModelTrained(
        dataset=DATASET,
        run_id=_run_id("t"),
        job_name=name,
        model_uri=f"{base}/3/model",
        metrics_uri=f"{base}/3/metrics.json",
    )


def test_the_local_runner_announces_its_own_tuning_result(step_context: StepContext) -> None:
    local = FakeJobRunner(publishes_tuning_result=True)
    handle_train_request(step_context, _request("t", tune=True), event_id="m", runner=local)
    name = local.submit(local.spec_of(_run_id("t")), request_id=_run_id("t"))
    local.finish(name, "succeeded", model_dir="gs://x/3/model")

    end_job(step_context, local, _run_id("t"), "log-1")

    assert _bus(step_context).of_type(ModelTrained) == []


def test_log_entries_before_the_job_ends_retry_or_are_ignored(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    outcome = handle_train_request(step_context, _request("a"), event_id="m", runner=runner)
    assert outcome is not None
    job_id = job_id_of(outcome.outputs["job_name"])

    def entry(severity: str, text: str) -> bytes:
        return json.dumps(
            {
                "resource": {"type": "ml_job", "labels": {"job_id": job_id}},
                "severity": severity,
                "textPayload": text,
            }
        ).encode()

    with pytest.raises(TransientError, match="still running"):
        handle_job_event(
            step_context,
            parse_job_event(entry("ERROR", "replica exited with a non-zero status of 1")),
            event_id="l1",
            runner=runner,
        )
    ignored = handle_job_event(
        step_context,
        parse_job_event(entry("INFO", "Job is running.")),
        event_id="l2",
        runner=runner,
    )
    unknown = handle_job_event(
        step_context,
        parse_job_event(json.dumps({"resource": {"labels": {"job_id": "999"}}}).encode()),
        event_id="l3",
        runner=runner,
    )

    assert ignored is None
    assert unknown is None
    run = step_context.ledger.get(_run_id("a"))
    assert run is not None
    assert JOB_STEP not in run.steps


def test_a_request_without_id_is_keyed_by_its_message_id(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    request = TrainRequest(dataset=DATASET, reason="cloud scheduler")

    handle_train_request(step_context, request, event_id="4242", runner=runner)
    handle_train_request(step_context, request, event_id="4242", runner=runner)  # redelivered

    run = step_context.ledger.get(run_id_for_request(DATASET, "message:4242"))
    assert run is not None
    assert run.trigger.request_id == "message:4242"
    assert run.steps["train"].attempts == 1
    assert [spec.run_id for spec in runner.submitted] == [run.run_id]


def test_a_requests_reason_is_recorded_on_its_run(
    step_context: StepContext, runner: FakeJobRunner
) -> None:
    request = _request("weekly", reason="scheduled retrain (0 3 * * 1, Etc/UTC)")

    handle_train_request(step_context, request, event_id="m9", runner=runner)

    run = step_context.ledger.get(_run_id("weekly"))
    assert run is not None
    assert run.trigger.reason == "scheduled retrain (0 3 * * 1, Etc/UTC)"


def _run_waiting_for_training(ctx: StepContext, clock: Clock, trigger: Trigger, *steps: str) -> str:
    run_id = (
        run_id_for_request(DATASET, trigger.request_id)
        if trigger.request_id
        else "credit-0123456789abcdef"
    )
    ctx.ledger.ensure(
        RunRecord(
            run_id=run_id,
            dataset=DATASET,
            trigger=trigger,
            created_at=clock.now,
            updated_at=clock.now,
        )
    )
    for step in steps:
        execute_step(
            ctx,
            run=ctx.ledger.get(run_id),
            step=step,
            owner=f"{step}-1",  # type: ignore[arg-type]
            body=lambda claim, log: StepOutcome(summary="done"),
        )
    return run_id


def test_a_released_files_run_is_trained_when_its_transform_names_it(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    """A quarantined file released after review runs in a run of its own (request id
    release:<run>); its transform's request names that run, as for an upload's run."""
    released = Trigger(kind="request", request_id="release:credit-0123456789abcdef")
    run_id = _run_waiting_for_training(step_context, clock, released, "validate", "transform")

    handle_train_request(
        step_context,
        _request(f"run:{run_id}", run_id=run_id),
        event_id="e1",
        runner=runner,
    )

    run = step_context.ledger.get(run_id)
    assert run is not None
    assert run.steps["train"].state == "succeeded"  # the job was submitted
    assert len(runner.jobs) == 1


def test_a_request_naming_a_run_without_an_accepted_file_is_refused(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    other = Trigger(kind="request", request_id="nightly")
    run_id = _run_waiting_for_training(step_context, clock, other, "transform")

    with pytest.raises(BadRequestError, match="not the run of a file accepted into credit"):
        handle_train_request(
            step_context,
            _request(f"run:{run_id}", run_id=run_id),
            event_id="e1",
            runner=runner,
        )


def test_a_request_while_validate_still_records_its_end_is_retried_not_refused(
    step_context: StepContext, runner: FakeJobRunner, clock: Clock
) -> None:
    """validate publishes data-validated before it creates its result: transform's
    request can arrive while the record still says validate is running (its claim
    without its result)."""
    upload = Trigger(kind="object", uri="gs://cascade-landing/credit/a.csv", generation=1)
    run_id = _run_waiting_for_training(step_context, clock, upload, "validate", "transform")
    assert step_context.artifacts.delete(RunPaths(run_id).result("validate"))
    record = step_context.ledger.get(run_id)
    assert record is not None
    assert record.steps["validate"].state == "running"

    with pytest.raises(StepInProgressError, match="validate step has not finished yet"):
        handle_train_request(
            step_context, _request(f"run:{run_id}", run_id=run_id), event_id="e1", runner=runner
        )
    assert runner.jobs == {}


@pytest.mark.parametrize(("written_by", "shown"), [("own", True), ("earlier-job", False)])
def test_a_failed_job_records_the_trainers_own_reason_not_the_generic_exit(
    step_context: StepContext, runner: FakeJobRunner, written_by: str, shown: bool
) -> None:
    outcome = handle_train_request(step_context, _request("a"), event_id="ma", runner=runner)
    assert outcome is not None
    job_name = outcome.outputs["job_name"]
    failure = TrainingFailure(
        job=job_name if written_by == "own" else "projects/p/locations/l/customJobs/1",
        kind="permanent",
        error="model module gs://b/m.py#3: build_model(context) failed: ValueError: bad",
    )
    step_context.artifacts.write_json(
        f"runs/{_run_id('a')}/training/{TRAINING_FAILURE_FILE}", failure
    )
    event = JobEvent(
        dataset=DATASET,
        run_id=_run_id("a"),
        job_name=job_name,
        state="failed",
        error="The replica workerpool0-0 exited with a non-zero status of 1.",
    )

    handle_job_event(step_context, event, event_id="je1", runner=runner)

    run = step_context.ledger.get(_run_id("a"))
    assert run is not None
    assert run.state == "failed"
    assert ("build_model(context) failed: ValueError: bad" in (run.error or "")) is shown
    assert ("non-zero status" in (run.error or "")) is not shown
