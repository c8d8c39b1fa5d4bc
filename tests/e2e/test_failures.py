"""What must not reach users: a bad model, a failed training job."""

from __future__ import annotations

import pytest

from cascade.core.messages import TrainRequest
from cascade.core.runs import run_id_for_request
from tests.e2e.conftest import E2E_PIPELINE, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

NO_REGRESSION = E2E_PIPELINE.replace(
    "{metric: auc, tier: blocking, lower_bound: 0.55}",
    "{metric: auc, tier: blocking, lower_bound: 0.55, max_regression: 0.02}",
)
# One unit, one epoch, a learning rate that throws the weights about: a model that
# trains and exports fine but is no better than chance, or outputs NaN.
BAD_HYPERPARAMETERS: dict[str, float | int] = {
    "learning_rate": 10.0,
    "hidden_units": 1,
    "hidden_layers": 1,
    "dropout": 0.9,
    "epochs": 1,
}


def test_a_bad_model_is_not_deployed_and_the_previous_version_keeps_serving(
    scenario: Scenario,
) -> None:
    scenario.configure(NO_REGRESSION)
    good = scenario.wait(scenario.upload(rows=2000, seed=21))
    assert good.state == "succeeded", good.error
    before = scenario.serving()
    assert before is not None
    answer_before = scenario.predict()
    scenario.wait_for_jobs_to_end()

    scenario.publish(
        TrainRequest(
            dataset=scenario.dataset, request_id="bad", hyperparameters=BAD_HYPERPARAMETERS
        )
    )
    bad = scenario.wait(run_id_for_request(scenario.dataset, "bad"), timeout=240)

    assert bad.state == "rejected", bad.error
    assert bad.steps["evaluate"].outputs["verdict"] == "not_blessed"
    assert "deploy" not in bad.steps
    after = scenario.serving()
    assert after is not None
    assert after.traffic == before.traffic
    assert [v.run_id for v in after.versions] == [good.run_id]
    answer_after = scenario.predict()
    assert answer_after.status_code == 200, answer_after.text
    assert answer_after.json() == answer_before.json()  # the same model answers


def test_a_failing_training_job_marks_the_run_failed_with_its_error(scenario: Scenario) -> None:
    good = scenario.wait(scenario.upload(rows=1000, seed=31))
    assert good.state == "succeeded", good.error
    scenario.wait_for_jobs_to_end()

    scenario.publish(
        TrainRequest(
            dataset=scenario.dataset, request_id="broken", hyperparameters={"hidden_units": 0}
        )
    )
    run = scenario.wait(run_id_for_request(scenario.dataset, "broken"), timeout=240)

    assert run.state == "failed"
    assert "hidden_units" in (run.error or ""), run.error
    [job] = [job for job in scenario.jobs() if job.spec.run_id == run.run_id]
    assert job.state == "failed"
    assert "hidden_units" in job.error
    serving = scenario.serving()
    assert serving is not None
    assert [v.run_id for v in serving.versions] == [good.run_id]  # still the earlier model
