"""Transform → train → job on the local cloud, with the local job service as Vertex AI.

A private local cloud whose job service runs ``tests.unit.jobs.fake_trainer`` (same
entry point contract as the real trainer, no TensorFlow): the chain from an upload to
a trained run whose ``model-trained`` reaches evaluate; one job per dataset with
requests coalesced into one follow-up; failures arriving as job events. The fake's
"model" is not one evaluation can score, so runs end at evaluate: these tests check
what happens up to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.messages import TrainRequest
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord, run_id_for_request
from cascade.jobs.local_runner import LocalJobRunner
from cascade.jobs.lock import follow_up_run_id
from cascade.transform.catalog import read_transform
from tests.conftest import LocalCloud, running_test_cloud

pytestmark = pytest.mark.integration

FAKE_TRAINER = "tests.unit.jobs.fake_trainer"
JOB_SECONDS = 12
"""How long the jobs that later requests must find running take: longer than the
steps' bookkeeping in between (and its retries) on a loaded machine."""


@pytest.fixture(scope="module")
def training_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    # Backoff as the end-to-end suite's (2 s first): a train request that arrives
    # before validate has created its result (validate publishes first) is retried
    # until it has.
    with running_test_cloud(
        tmp_path_factory.mktemp("training-cloud"), trainer_module=FAKE_TRAINER, backoff_scale=0.2
    ) as cloud:
        yield cloud


def _jobs(cloud: LocalCloud) -> LocalJobRunner:
    return LocalJobRunner(cloud.state.environment["CASCADE_JOB_SERVICE_URL"])


FAKE_MODULE_CONFIG = b"""\
label: defaulted
problem_type: binary
training: {model: custom, model_module: models/fake.py}
"""
"""The fake trainer's hyperparameters (``fail``, ``sleep_s``) are no family's; a custom
module's own names are checked by the trainer that loads it, which the fake one skips."""


def _new_dataset(cloud: LocalCloud) -> str:
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    paths = DatasetPaths(dataset)
    cloud.artifacts.write(paths.pipeline_config, FAKE_MODULE_CONFIG, content_type="text/yaml")
    cloud.artifacts.write(paths.model_module("models/fake.py"), b"def build_model(context): ...\n")
    return dataset


def _done(run: RunRecord) -> bool:
    return run.state != "running"


def _trained(run: RunRecord) -> bool:
    """Its job's model-trained arrived (evaluate ran), or the run ended before that; and
    train's own record is final (its result is created after the submission, and the
    job may end first)."""
    train = run.steps.get("train")
    if train is None or train.state == "running":
        return False
    return "evaluate" in run.steps or run.state != "running"


def _wait_for_job_end(cloud: LocalCloud, run: RunRecord) -> None:
    """The trainer announces its model before its process exits: wait for the job's end."""
    jobs, name = _jobs(cloud), run.steps["train"].outputs["job_name"]
    deadline = time.monotonic() + 60
    while not jobs.get(name).finished:
        assert time.monotonic() < deadline, f"job {name} did not finish"
        time.sleep(0.1)


def _assert_trained(run: RunRecord) -> None:
    assert run.steps["train"].state == "succeeded", run.error
    assert "evaluate" in run.steps, run.error  # the trainer's model-trained was delivered


def _upload(cloud: LocalCloud, dataset: str, rows: int = 400, seed: int = 1) -> RunRecord:
    name = f"{dataset}/day-{seed}.csv"
    generation = cloud.upload(name, sample_csv(rows, seed=seed))
    return cloud.wait_for_run(cloud.run_id_for(name, generation), _trained, timeout=120)


def test_an_upload_is_transformed_trained_by_a_job_and_carried_on(
    training_cloud: LocalCloud,
) -> None:
    dataset = _new_dataset(training_cloud)

    run = _upload(training_cloud, dataset)

    chain = [step for step in run.steps if step != "monitor"]  # the monitor runs beside
    assert chain[:3] == ["validate", "transform", "train"]
    _assert_trained(run)
    _wait_for_job_end(training_cloud, run)
    spec = read_transform(training_cloud.artifacts, run.run_id)
    assert spec is not None
    assert spec.train_rows + spec.eval_rows == 400
    job_name = run.steps["train"].outputs["job_name"]
    status = _jobs(training_cloud).get(job_name)
    assert status.state == "succeeded"
    model = training_cloud.artifacts.read(f"runs/{run.run_id}/training/model/model.json")
    assert model is not None
    assert b'"transform_spec_uri"' in model.data
    assert run.lineage["training_job"] == job_name


def test_requests_during_a_failing_job_coalesce_into_one_follow_up(
    training_cloud: LocalCloud,
) -> None:
    dataset = _new_dataset(training_cloud)
    upload = _upload(training_cloud, dataset)
    _assert_trained(upload)
    _wait_for_job_end(training_cloud, upload)
    first = TrainRequest(
        dataset=dataset, request_id="first", hyperparameters={"fail": True, "sleep_s": JOB_SECONDS}
    )
    training_cloud.publish(first)
    first_run = run_id_for_request(dataset, "first")
    training_cloud.wait_for_run(
        first_run,
        lambda run: "train" in run.steps and run.steps["train"].state == "succeeded",
        timeout=60,
    )

    for request_id in ("second", "third"):
        training_cloud.publish(TrainRequest(dataset=dataset, request_id=request_id))
    follow_up = follow_up_run_id(dataset, first_run)

    failed = training_cloud.wait_for_run(first_run, _done, timeout=120)
    assert failed.state == "failed"
    assert "failing as asked" in (failed.error or "")
    for request_id in ("second", "third"):
        coalesced = training_cloud.wait_for_run(run_id_for_request(dataset, request_id), _done)
        assert coalesced.steps["train"].outputs == {"coalesced_into": follow_up}
    _assert_trained(training_cloud.wait_for_run(follow_up, _trained, timeout=120))
    jobs = [job for job in _jobs(training_cloud).list_jobs() if job.spec.dataset == dataset]
    assert sorted(job.spec.run_id for job in jobs) == sorted(
        [upload.run_id, failed.run_id, follow_up]
    )  # no job for the coalesced requests
    assert {job.spec.run_id: job.state for job in jobs}[failed.run_id] == "failed"


def test_a_successful_job_hands_the_lock_to_its_follow_up(training_cloud: LocalCloud) -> None:
    dataset = _new_dataset(training_cloud)
    upload = _upload(training_cloud, dataset)
    _assert_trained(upload)
    _wait_for_job_end(training_cloud, upload)
    training_cloud.publish(
        TrainRequest(dataset=dataset, request_id="slow", hyperparameters={"sleep_s": JOB_SECONDS})
    )
    slow_run = run_id_for_request(dataset, "slow")
    training_cloud.wait_for_run(
        slow_run,
        lambda run: "train" in run.steps and run.steps["train"].state == "succeeded",
        timeout=60,
    )

    training_cloud.publish(TrainRequest(dataset=dataset, request_id="meanwhile"))

    slow = training_cloud.wait_for_run(
        slow_run,
        lambda run: "training_job" in run.steps and run.steps["training_job"].state != "running",
        timeout=120,
    )
    assert slow.steps["training_job"].state == "succeeded"
    assert slow.steps["training_job"].outputs["follow_up"] == follow_up_run_id(dataset, slow_run)
    _assert_trained(
        training_cloud.wait_for_run(follow_up_run_id(dataset, slow_run), _trained, timeout=120)
    )
