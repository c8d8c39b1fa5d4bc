"""The train step pins a custom model module: generation and hash in the spec and lineage."""

from __future__ import annotations

import hashlib

import pytest

from cascade.core.context import StepContext
from cascade.core.errors import BadInputError, BadRequestError, TransientError
from cascade.core.fakes import RecordingBus
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.messages import Alert, TrainRequest
from cascade.core.model_modules import (
    MAX_MODULE_BYTES,
    pin_model_module,
    push_model_module,
)
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.runs import run_id_for_request
from cascade.jobs.lock import TrainingLockStore
from cascade.jobs.records import job_spec_name
from cascade.steps.train import handle_train_request
from tests.unit.conftest import Clock
from tests.unit.jobs.fakes import FakeJobRunner, point_latest_transform

DATASET = "credit"
MODULE = "models/churn.py"
MODULE_URI = f"gs://cascade-artifacts/datasets/{DATASET}/{MODULE}"
SOURCE = b"def build_model(context):\n    return None\n"
CUSTOM_CONFIG = f"training:\n  model: custom\n  model_module: {MODULE}\n".encode()


class CrashingRunner(FakeJobRunner):
    """Submits the job, then fails before the step can record it, ``crashes`` times."""

    def __init__(self, crashes: int, error: Exception) -> None:
        super().__init__()
        self.crashes = crashes
        self.error = error
        self.calls: list[TrainingJobSpec] = []

    def submit(self, spec: TrainingJobSpec, *, request_id: str) -> str:
        self.calls.append(spec)
        name = super().submit(spec, request_id=request_id)
        if self.crashes:
            self.crashes -= 1
            raise self.error
        return name


@pytest.fixture(autouse=True)
def _transformed(step_context: StepContext) -> None:
    point_latest_transform(step_context, DATASET)


def _custom_dataset(ctx: StepContext, source: bytes = SOURCE) -> int:
    push_pipeline_config(ctx.artifacts, DATASET, CUSTOM_CONFIG, where="pipeline.yaml")
    return push_model_module(ctx.artifacts, DATASET, MODULE, source).generation


def _request(request_id: str) -> TrainRequest:
    return TrainRequest(dataset=DATASET, request_id=request_id)


def _alerts(ctx: StepContext) -> list[Alert]:
    assert isinstance(ctx.bus, RecordingBus)
    return [message for message in ctx.bus.published if isinstance(message, Alert)]


def test_a_custom_run_pins_the_module_generation_and_hash_in_spec_outputs_and_lineage(
    step_context: StepContext,
) -> None:
    runner = FakeJobRunner()
    generation = _custom_dataset(step_context)
    digest = hashlib.sha256(SOURCE).hexdigest()

    outcome = handle_train_request(step_context, _request("c1"), event_id="m1", runner=runner)

    assert outcome is not None
    assert outcome.state == "succeeded"
    (spec,) = runner.submitted
    assert spec.model == "custom"
    assert spec.model_module is not None
    assert spec.model_module.uri == MODULE_URI
    assert spec.model_module.generation == generation
    assert spec.model_module.sha256 == digest
    stored = step_context.artifacts.read(job_spec_name(spec.run_id))
    assert stored is not None
    assert TrainingJobSpec.model_validate_json(stored.data) == spec  # what the trainer reads
    pinned = {
        "model": "custom",
        "model_module": f"{MODULE_URI}#{generation}",
        "model_module_sha256": digest,
    }
    assert pinned.items() <= outcome.outputs.items()
    run = step_context.ledger.get(spec.run_id)
    assert run is not None
    assert pinned.items() <= run.lineage.items()
    assert pinned.items() <= run.steps["train"].outputs.items()


def test_a_later_push_does_not_change_what_a_submitted_run_pinned(
    step_context: StepContext,
) -> None:
    runner = FakeJobRunner()
    first = _custom_dataset(step_context)
    handle_train_request(step_context, _request("c1"), event_id="m1", runner=runner)

    second = push_model_module(step_context.artifacts, DATASET, MODULE, SOURCE + b"# v2\n")
    handle_train_request(step_context, _request("c1"), event_id="m1-again", runner=runner)

    assert second.generation != first
    (spec,) = runner.submitted
    assert spec.model_module is not None
    assert spec.model_module.generation == first
    run = step_context.ledger.get(spec.run_id)
    assert run is not None
    assert run.lineage["model_module"] == f"{MODULE_URI}#{first}"


@pytest.mark.parametrize(
    "error",
    [TransientError("job service unavailable"), RuntimeError("instance killed")],
    ids=["transient", "crash"],
)
def test_a_retried_step_resubmits_the_spec_it_wrote_not_a_newer_module(
    step_context: StepContext, clock: Clock, error: Exception
) -> None:
    """The first attempt wrote its spec and submitted the job, then failed before
    recording the submission; a newer module is pushed before the redelivery."""
    runner = CrashingRunner(crashes=1, error=error)
    first = _custom_dataset(step_context)
    with pytest.raises(type(error)):
        handle_train_request(step_context, _request("c1"), event_id="m1", runner=runner)
    newer = push_model_module(step_context.artifacts, DATASET, MODULE, SOURCE + b"# v2\n")
    clock.advance(1)

    outcome = handle_train_request(step_context, _request("c1"), event_id="m1", runner=runner)

    assert outcome is not None
    assert outcome.state == "succeeded"
    first_spec, retried_spec = runner.calls
    assert retried_spec == first_spec  # the same spec: same transform, baseline, module
    assert retried_spec.model_module is not None
    assert retried_spec.model_module.generation == first != newer.generation
    assert len(runner.jobs) == 1  # the runner found the job it had already started
    assert outcome.outputs["model_module"] == f"{MODULE_URI}#{first}"
    stored = step_context.artifacts.read(job_spec_name(retried_spec.run_id))
    assert stored is not None
    assert TrainingJobSpec.model_validate_json(stored.data) == first_spec


def test_a_missing_module_fails_the_run_naming_the_object_and_is_not_retried(
    step_context: StepContext,
) -> None:
    runner = FakeJobRunner()
    push_pipeline_config(step_context.artifacts, DATASET, CUSTOM_CONFIG, where="pipeline.yaml")

    outcome = handle_train_request(step_context, _request("c1"), event_id="m1", runner=runner)
    again = handle_train_request(step_context, _request("c1"), event_id="m1", runner=runner)

    assert outcome is not None  # acknowledged: no exception, so no 5xx and no redelivery
    assert outcome.state == "failed"
    assert again is None  # a redelivery is a duplicate of finished work
    assert runner.submitted == []
    run = step_context.ledger.get(run_id_for_request(DATASET, "c1"))
    assert run is not None
    assert run.state == "failed"
    step = run.steps["train"]
    assert step.state == "failed"
    assert step.attempts == 1
    assert MODULE_URI in (step.error or "")
    assert "does not exist" in (step.error or "")
    (alert,) = _alerts(step_context)
    assert MODULE_URI in alert.summary
    lock, _ = TrainingLockStore(step_context.artifacts, DATASET).read()
    assert lock.active is None
    assert step_context.artifacts.read(job_spec_name(run.run_id)) is None


def test_a_module_that_is_not_text_fails_the_run(step_context: StepContext) -> None:
    runner = FakeJobRunner()
    push_pipeline_config(step_context.artifacts, DATASET, CUSTOM_CONFIG, where="pipeline.yaml")
    step_context.artifacts.write(f"datasets/{DATASET}/{MODULE}", b"\xff\xfe\x00binary")

    outcome = handle_train_request(step_context, _request("c1"), event_id="m1", runner=runner)

    assert outcome is not None
    assert outcome.state == "failed"
    assert "not UTF-8" in outcome.summary
    assert MODULE_URI in outcome.summary
    assert runner.submitted == []


def test_a_run_of_a_built_in_family_records_the_family_and_no_module(
    step_context: StepContext,
) -> None:
    runner = FakeJobRunner()
    push_pipeline_config(
        step_context.artifacts, DATASET, b"training:\n  model: network\n", where="pipeline.yaml"
    )

    outcome = handle_train_request(step_context, _request("n1"), event_id="m1", runner=runner)

    assert outcome is not None
    (spec,) = runner.submitted
    assert spec.model == "network"
    assert spec.model_module is None
    run = step_context.ledger.get(spec.run_id)
    assert run is not None
    assert run.lineage["model"] == "network"
    assert "model_module" not in run.lineage
    assert "model_module" not in outcome.outputs


def test_pinning_reads_the_current_generation_and_hashes_its_bytes(
    step_context: StepContext,
) -> None:
    store = step_context.artifacts
    push_model_module(store, DATASET, MODULE, b"x = 1\n")
    latest = push_model_module(store, DATASET, MODULE, SOURCE)

    pinned = pin_model_module(store, DATASET, MODULE)

    assert pinned == latest
    assert pinned.sha256 == hashlib.sha256(SOURCE).hexdigest()


def test_pinning_refuses_a_module_over_one_mebibyte(step_context: StepContext) -> None:
    step_context.artifacts.write(f"datasets/{DATASET}/{MODULE}", b"#" * (MAX_MODULE_BYTES + 1))

    with pytest.raises(BadInputError, match="at most 1048576"):
        pin_model_module(step_context.artifacts, DATASET, MODULE)


@pytest.mark.parametrize(
    "name",
    ["../pipeline.py", "/models/x.py", "models\\x.py", "models/x.py\n", "models/../x.py", "x"],
)
def test_pinning_refuses_a_name_outside_the_datasets_folder(
    step_context: StepContext, name: str
) -> None:
    with pytest.raises(BadRequestError, match="invalid model module name"):
        pin_model_module(step_context.artifacts, DATASET, name)
