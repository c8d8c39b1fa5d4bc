"""metrics.json and infra_check.json as the trainer writes them, for evaluation tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cascade.core.messages import ModelTrained
from cascade.core.runs import RunRecord, Trigger
from cascade.core.store import ArtifactStore
from cascade.trainer.infra_check import InfraCheck, LatencyStats

DATASET = "credit"
RUN_ID = "credit-0123456789abcdef"
MODEL_URI = f"gs://cascade-artifacts/runs/{RUN_ID}/training/model"
DEPLOYED_URI = "gs://cascade-artifacts/runs/credit-deployed/training/model"
METRICS_NAME = f"runs/{RUN_ID}/training/metrics.json"
INFRA_NAME = f"runs/{RUN_ID}/training/infra_check.json"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def model_metrics(
    uri: str,
    overall: dict[str, float],
    slices: dict[str, tuple[int, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """``slices``: {"city=paris": (examples, metrics)}."""
    return {
        "model_uri": uri,
        "overall": {"examples": 1000, "metrics": overall},
        "slices": [
            {
                "feature": name.split("=")[0],
                "value": name.split("=")[1],
                "examples": n,
                "metrics": values,
            }
            for name, (n, values) in (slices or {}).items()
        ],
    }


def metrics_report(
    candidate: dict[str, Any], baseline: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "dataset": DATASET,
        "run_id": RUN_ID,
        "problem_type": "binary",
        "eval_examples": 1000,
        "slice_features": ["city"],
        "candidate": candidate,
        "baseline": baseline,
        "baseline_error": None,
        "hyperparameters": {"learning_rate": 0.01},
        "epochs_trained": 3,
        "created_at": NOW.isoformat(),
        **extra,
    }


def infra_check(passed: bool = True, reasons: list[str] | None = None) -> InfraCheck:
    return InfraCheck(
        model_dir=MODEL_URI,
        passed=passed,
        reasons=reasons or [],
        inputs={"age": "float32", "city": "string", "key": "string"},
        outputs=["class_ids", "classes", "key", "probabilities"],
        latency=LatencyStats(
            single_row_p50_ms=0.4, single_row_p95_ms=0.6, batch_rows=256, batch_p50_ms=1.2, calls=50
        )
        if passed
        else None,
        checked_at=NOW,
    )


def store_training_outputs(
    artifacts: ArtifactStore, report: dict[str, Any], infra: InfraCheck | None
) -> None:
    artifacts.write_json(METRICS_NAME, report)
    if infra is not None:
        artifacts.write_json(INFRA_NAME, infra)


def start_run(artifacts_ledger: Any, state: str = "running") -> RunRecord:
    record = RunRecord(
        run_id=RUN_ID,
        dataset=DATASET,
        trigger=Trigger(kind="request", request_id="r1"),
        state=state,  # type: ignore[arg-type]
        created_at=NOW,
        updated_at=NOW,
    )
    return artifacts_ledger.ensure(record)


def model_trained(**fields: Any) -> ModelTrained:
    values: dict[str, Any] = {
        "dataset": DATASET,
        "run_id": RUN_ID,
        "job_name": "job-1",
        "model_uri": MODEL_URI,
        "metrics_uri": f"gs://cascade-artifacts/{METRICS_NAME}",
    }
    values.update(fields)
    return ModelTrained(**values)
