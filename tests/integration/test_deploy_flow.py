"""model-trained → evaluate → model-blessed → deploy → model server, through the local cloud.

A model that fails a blocking threshold or its load-and-probe check is never deployed;
the audited override (over the evaluate-http function) deploys one that failed a metric.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from cascade.core.messages import ModelTrained
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord, Trigger
from cascade.serving.state import read_serving_state
from tests.conftest import LocalCloud
from tests.unit.evaluation.builders import infra_check, metrics_report, model_metrics
from tests.unit.serving.saved_models import expected_positive, export_tiny_model, upload_model

pytestmark = pytest.mark.integration
PIPELINE = b"""
evaluation:
  thresholds:
    - {metric: auc, tier: blocking, lower_bound: 0.70}
deployment:
  canary_requests: 5
"""


def train(
    cloud: LocalCloud,
    dataset: str,
    tmp: Path,
    *,
    auc: float,
    probe_passes: bool = True,
    weight: float = 1.0,
) -> str:
    """What a training run leaves behind, then its model-trained message; the run id."""
    run_id = f"{dataset}-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    cloud.ledger.ensure(
        RunRecord(
            run_id=run_id,
            dataset=dataset,
            created_at=now,
            updated_at=now,
            trigger=Trigger(kind="request", request_id=run_id),
        )
    )
    model_uri = upload_model(
        cloud.artifacts, run_id, export_tiny_model(tmp / run_id, weight=weight)
    )
    report = metrics_report(model_metrics(model_uri, {"auc": auc, "loss": 0.4}))
    report.update(dataset=dataset, run_id=run_id)
    cloud.artifacts.write_json(f"runs/{run_id}/training/metrics.json", report)
    probe = infra_check(passed=probe_passes, reasons=[] if probe_passes else ["nan outputs"])
    cloud.artifacts.write_json(f"runs/{run_id}/training/infra_check.json", probe)
    cloud.publish(
        ModelTrained(
            dataset=dataset,
            run_id=run_id,
            job_name="job",
            model_uri=model_uri,
            metrics_uri=cloud.artifacts.uri(f"runs/{run_id}/training/metrics.json"),
        )
    )
    return run_id


def finished(run: RunRecord) -> bool:
    return run.state != "running" or (
        "deploy" in run.steps and run.steps["deploy"].state != "running"
    )


def deployed_runs(cloud: LocalCloud, dataset: str) -> list[str]:
    found = read_serving_state(cloud.artifacts, dataset)
    return [] if found is None else [v.run_id for v in found[0].versions if v.deployed]


@pytest.fixture
def dataset(local_cloud: LocalCloud) -> str:
    name = f"flow-{uuid.uuid4().hex[:8]}"
    local_cloud.artifacts.write(DatasetPaths(name).pipeline_config, PIPELINE)
    return name


def test_a_blessed_model_is_deployed_and_answers(
    local_cloud: LocalCloud, dataset: str, tmp_path: Path
) -> None:
    run_id = train(local_cloud, dataset, tmp_path, auc=0.9)

    run = local_cloud.wait_for_run(run_id, finished, timeout=120)

    assert run.state == "succeeded", run.error
    assert run.steps["evaluate"].outputs["verdict"] == "blessed"
    assert deployed_runs(local_cloud, dataset) == [run_id]
    url = local_cloud.refresh_state().environment["CASCADE_DEPLOY_MODEL_SERVER_URL"]
    answer = requests.post(
        f"{url}/v1/models/{dataset}:predict",
        timeout=10,
        json={"instances": [{"age": 50.0, "city": "nice", "key": "k1"}]},
    ).json()
    assert answer["predictions"][0]["probabilities"][1] == pytest.approx(
        expected_positive(50.0, "nice"), abs=1e-6
    )


@pytest.mark.parametrize(
    ("auc", "probe_passes"),
    [(0.6, True), (0.95, False)],
    ids=["blocking-threshold", "load-and-probe"],
)
def test_a_model_that_fails_a_blocking_check_is_never_deployed(
    local_cloud: LocalCloud, dataset: str, tmp_path: Path, auc: float, probe_passes: bool
) -> None:
    run_id = train(local_cloud, dataset, tmp_path, auc=auc, probe_passes=probe_passes)

    run = local_cloud.wait_for_run(run_id, timeout=120)

    assert run.state == "rejected"
    assert run.steps["evaluate"].outputs["verdict"] == "not_blessed"
    assert "deploy" not in run.steps
    assert run_id not in deployed_runs(local_cloud, dataset)


def test_the_http_override_deploys_a_rejected_model_with_an_audit_trail(
    local_cloud: LocalCloud, dataset: str, tmp_path: Path
) -> None:
    run_id = train(local_cloud, dataset, tmp_path, auc=0.6)
    local_cloud.wait_for_run(run_id, timeout=120)
    answer = local_cloud.call_http_function(
        "evaluate-http",
        timeout=30,
        json={"run_id": run_id, "reason": "auc dips on the new segment; accepted", "actor": "ana"},
    )

    assert answer.status_code == 200, answer.text
    run = local_cloud.wait_for_run(
        run_id, lambda r: "deploy" in r.steps and finished(r), timeout=120
    )
    assert run.state == "succeeded", run.error
    assert run.lineage["evaluation_override"]["actor"] == "ana"
    assert deployed_runs(local_cloud, dataset) == [run_id]
