"""Model families end to end: boosted trees replace a network, a user's module trains and
serves, a broken module fails its run and deploys nothing.

Two chains (four training jobs in all, as few as the three cases allow):

- a network run deployed, then a ``boosted_trees`` retrain judged against it and served;
- a ``custom`` module (its own wide-and-deep architecture and hyperparameter) trained by
  the dataset's first upload and served (module-scoped: the broken module's test reuses
  it), then a retrain with a module whose ``build_model`` raises.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from cascade.cli.sample_data import sample_instance
from cascade.core.messages import TrainRequest
from cascade.core.runs import RunRecord, run_id_for_request
from cascade.localcloud.processes import wait_until
from tests.conftest import LocalCloud
from tests.e2e.conftest import E2E_PIPELINE, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TRAINING_S = 420
"""How long one training run may take here (two shared cores, TensorFlow's start-up)."""
NETWORK_LINE = "  model: network\n"
assert NETWORK_LINE in E2E_PIPELINE
TREES_PIPELINE = E2E_PIPELINE.replace(
    NETWORK_LINE, "  model: boosted_trees\n  hyperparameters: {num_trees: 200, num_leaves: 15}\n"
)


def custom_pipeline(module: str) -> str:
    """The e2e pipeline with ``model: custom``, the module's own hyperparameter set and a
    learning rate that fits its small model within the e2e pipeline's 10 epochs."""
    return E2E_PIPELINE.replace(
        NETWORK_LINE,
        f"  model: custom\n  model_module: {module}\n"
        "  hyperparameters: {deep_units: 16, learning_rate: 0.01}\n",
    )


WIDE_MODULE = textwrap.dedent(
    """\
    import keras

    HYPERPARAMETERS = {"deep_units": 12}


    def build_model(context):
        deep = keras.layers.Dense(context.params["deep_units"], activation="relu")(
            context.inputs
        )
        wide_and_deep = keras.layers.Concatenate()([context.inputs, deep])
        head = keras.layers.Dense(context.output_units, activation="sigmoid")(wide_and_deep)
        return keras.Model(context.inputs, head, name="wide_and_deep")
    """
).encode()
BROKEN_MESSAGE = "this module builds no model: the sparkle layer is missing"
BROKEN_MODULE = textwrap.dedent(
    f"""\
    HYPERPARAMETERS = {{"deep_units": 12}}  # the config sets it (custom_pipeline)


    def build_model(context):
        raise RuntimeError({BROKEN_MESSAGE!r})
    """
).encode()


# Helpers -----------------------------------------------------------------------------


def write_module(scenario: Scenario, name: str, source: bytes) -> int:
    """Store a model module at ``datasets/<dataset>/<name>``; its generation."""
    generation = scenario.cloud.artifacts.write(
        f"datasets/{scenario.dataset}/{name}", source, content_type="text/x-python"
    )
    assert generation is not None
    return generation


def module_uri(scenario: Scenario, name: str, generation: int) -> str:
    bucket = scenario.cloud.settings.artifacts_bucket
    return f"gs://{bucket}/datasets/{scenario.dataset}/{name}#{generation}"


def metrics_of(scenario: Scenario, run: RunRecord) -> dict[str, Any]:
    """The run's ``metrics.json`` (EvaluationReport), as JSON: no TensorFlow here."""
    stored = scenario.cloud.artifacts.read(f"runs/{run.run_id}/training/metrics.json")
    assert stored is not None, f"{run.run_id} wrote no metrics.json"
    report: dict[str, Any] = json.loads(stored.data)
    return report


def predict_version(scenario: Scenario, version: str, seed: int = 99) -> requests.Response:
    """Ask one deployed version of the model server (the route the canary checks use)."""
    url = scenario.cloud.refresh_state().environment["CASCADE_DEPLOY_MODEL_SERVER_URL"]
    return requests.post(
        f"{url}/v1/models/{scenario.dataset}/versions/{version}:predict",
        json={"instances": [sample_instance(seed)]},
        timeout=30,
    )


def probabilities(answer: requests.Response) -> list[float]:
    assert answer.status_code == 200, answer.text
    [prediction] = answer.json()["predictions"]
    values: list[float] = prediction["probabilities"]
    assert len(values) == 2
    assert sum(values) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= value <= 1.0 for value in values)
    return values


JOB_EVENTS = "evaluate-job-events.delivered"
"""Deliveries of job events acknowledged by the function (a failed job fails its run)."""
FAILURE_COUNTERS = ("failed_attempts", "dead_lettered", "undeliverable", "malformed")


def router_counters(scenario: Scenario) -> Counter[str]:
    """The event router's delivery counters (``<function>.<counter>``)."""
    return Counter(scenario.cloud.router_stats())


def failures_since(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """The failure counters that moved, by how much."""
    moved = after - before
    return {key: n for key, n in moved.items() if key.rsplit(".", 1)[-1] in FAILURE_COUNTERS}


def retrain(scenario: Scenario, request_id: str) -> RunRecord:
    scenario.publish(TrainRequest(dataset=scenario.dataset, request_id=request_id))
    return scenario.wait(run_id_for_request(scenario.dataset, request_id), timeout=TRAINING_S)


# Boosted trees -----------------------------------------------------------------------


def test_boosted_trees_judged_against_the_deployed_network_replace_it_and_serve(
    scenario: Scenario,
) -> None:
    network = scenario.wait(scenario.upload(rows=2000, seed=41), timeout=TRAINING_S)
    assert network.state == "succeeded", network.error
    assert network.lineage["model"] == "network"
    assert metrics_of(scenario, network)["model_family"] == "network"
    before = scenario.serving()
    assert before is not None
    [network_version] = before.versions
    network_answer = probabilities(scenario.predict())
    scenario.wait_for_jobs_to_end()  # the retrain must not coalesce into the upload's job

    scenario.configure(TREES_PIPELINE)
    trees = retrain(scenario, "trees")

    assert trees.state == "succeeded", trees.error
    assert trees.steps["train"].outputs["model"] == "boosted_trees"
    assert trees.lineage["model"] == "boosted_trees"
    assert "model_module" not in trees.lineage
    assert trees.steps["evaluate"].outputs["verdict"] == "blessed"
    report = metrics_of(scenario, trees)
    assert report["model_family"] == "boosted_trees"
    assert report["model_module"] is None
    assert report["hyperparameters"]["num_trees"] == 200
    assert "hidden_units" not in report["hyperparameters"]  # the network's are not the trees'
    assert 1 <= report["epochs_trained"] <= 200  # boosting rounds
    assert report["baseline_error"] is None
    baseline = report["baseline"]
    assert baseline is not None, "the deployed network was not evaluated"
    assert baseline["model_uri"] == network_version.model_uri
    assert report["candidate"]["model_uri"] != network_version.model_uri
    assert baseline["overall"]["examples"] == report["candidate"]["overall"]["examples"]
    assert baseline["overall"]["metrics"]["auc"] >= 0.55  # it was blessed on this bound
    assert report["candidate"]["overall"]["metrics"]["auc"] >= 0.55
    after = scenario.serving()
    assert after is not None
    trees_version = after.primary
    assert trees_version is not None
    assert trees_version.run_id == trees.run_id
    assert trees_version.version != network_version.version
    assert trees_version.model_uri == report["candidate"]["model_uri"]
    assert after.traffic == {trees_version.version: 100}
    served = probabilities(scenario.predict())  # the request shape of the network's
    assert served == probabilities(predict_version(scenario, trees_version.version))
    assert served != network_answer  # another model answers


# A user's module ----------------------------------------------------------------------


@dataclass(frozen=True)
class CustomChain:
    """A dataset whose first upload trained and deployed the ``wide.py`` module."""

    scenario: Scenario
    run: RunRecord
    module_generation: int


@pytest.fixture(scope="module")
def custom_chain(e2e_cloud: LocalCloud) -> CustomChain:
    e2e_cloud.refresh_state()
    scenario = Scenario(e2e_cloud, f"e2e{uuid.uuid4().hex[:10]}")
    scenario.configure(custom_pipeline("models/wide.py"))
    generation = write_module(scenario, "models/wide.py", WIDE_MODULE)
    run = scenario.wait(scenario.upload(rows=2000, seed=43), timeout=TRAINING_S)
    scenario.wait_for_jobs_to_end()
    return CustomChain(scenario, run, generation)


def test_a_module_with_its_own_architecture_trains_serves_and_is_in_the_lineage(
    custom_chain: CustomChain,
) -> None:
    scenario, run = custom_chain.scenario, custom_chain.run
    pinned = module_uri(scenario, "models/wide.py", custom_chain.module_generation)

    assert run.state == "succeeded", run.error
    assert run.lineage["model"] == "custom"
    assert run.lineage["model_module"] == pinned
    assert run.lineage["model_module_sha256"] == hashlib.sha256(WIDE_MODULE).hexdigest()
    train = run.steps["train"].outputs
    assert (train["model"], train["model_module"]) == ("custom", pinned)
    assert train["model_module_sha256"] == run.lineage["model_module_sha256"]
    report = metrics_of(scenario, run)
    assert report["model_family"] == "custom"
    assert report["model_module"] == pinned
    assert report["hyperparameters"]["deep_units"] == 16  # the module's own, from the config
    assert report["hyperparameters"]["learning_rate"] == 0.01  # Cascade's, compiled with it
    assert report["baseline"] is None  # the dataset's first model
    assert run.steps["evaluate"].outputs["verdict"] == "blessed"
    graph = scenario.cloud.artifacts.read(f"runs/{run.run_id}/training/model/saved_model.pb")
    assert graph is not None
    # The exported serving graph computes the module's own layers (its model's name
    # scopes them), the wide input concatenated with the deep layer's output.
    assert re.search(rb"wide_and_deep\w*/concatenate\w*/concat", graph.data)
    serving = scenario.serving()
    assert serving is not None
    version = next(v for v in serving.versions if v.run_id == run.run_id)
    assert version.model_uri == report["candidate"]["model_uri"]
    assert serving.traffic.get(version.version) == 100
    served = probabilities(scenario.predict())
    assert served == probabilities(predict_version(scenario, version.version))


def test_a_broken_module_fails_its_run_cleanly_and_deploys_nothing(
    custom_chain: CustomChain,
) -> None:
    scenario = custom_chain.scenario
    assert custom_chain.run.state == "succeeded", custom_chain.run.error
    before = scenario.serving()
    assert before is not None
    answer_before = probabilities(scenario.predict())
    counters_before = router_counters(scenario)
    generation = write_module(scenario, "models/broken.py", BROKEN_MODULE)
    scenario.configure(custom_pipeline("models/broken.py"))

    run = retrain(scenario, "broken")

    assert run.state == "failed", run.error
    # The run's error is the trainer's own one-line reason (its failure.json), not the
    # job's generic exit or a log tail; the job's own error is kept beside it.
    summary = run.error or ""
    assert "\n" not in summary, summary
    assert module_uri(scenario, "models/broken.py", generation) in summary, summary
    assert f"build_model(context) failed: RuntimeError: {BROKEN_MESSAGE}" in summary, summary
    assert "(line 5: raise RuntimeError(" in summary, summary  # the module's own line
    assert run.lineage["model_module"] == module_uri(scenario, "models/broken.py", generation)
    assert run.steps["training_job"].state == "failed"
    assert "exited with status 1" in run.steps["training_job"].outputs["job_error"]
    assert "evaluate" not in run.steps
    assert "deploy" not in run.steps
    [job] = [job for job in scenario.jobs() if job.spec.run_id == run.run_id]  # no resubmission
    assert job.state == "failed"
    assert BROKEN_MESSAGE in job.error
    runs = {r.run_id: r for r in scenario.settle()}
    assert sorted(runs) == sorted([custom_chain.run.run_id, run.run_id])  # no follow-up run
    settled = runs[run.run_id]
    assert settled.state == "failed"
    assert (settled.steps["train"].attempts, settled.steps["training_job"].attempts) == (1, 1)
    # The job event that failed the run was acknowledged, and no delivery of the retrain
    # failed even once: nothing is retried towards a dead letter.
    assert wait_until(
        lambda: router_counters(scenario)[JOB_EVENTS] > counters_before[JOB_EVENTS],
        timeout=30,
        interval=0.2,
    ), router_counters(scenario)
    assert failures_since(counters_before, router_counters(scenario)) == {}
    after = scenario.serving()
    assert after is not None
    assert (after.versions, after.traffic) == (before.versions, before.traffic)
    assert probabilities(scenario.predict()) == answer_before  # the module still answers
