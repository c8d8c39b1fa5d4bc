"""Where a trainer run writes: Vertex AI's layout, read from its environment."""

from __future__ import annotations

from cascade.core import vertex_job_env
from cascade.core.job_spec import TrainingJobSpec
from cascade.trainer.args import TrainerArgs
from cascade.trainer.task import OutputLocations, output_locations

BASE = "gs://arts/runs/credit-abc/training"
SPEC = TrainingJobSpec(
    run_id="credit-abc",
    dataset="credit",
    display_name="cascade-train-credit-abc",
    transform_spec_uri="gs://arts/runs/credit-abc/transform/transform.json",
    output_dir=BASE,
)


def _locations(environ: dict[str, str]) -> OutputLocations:
    args = TrainerArgs.from_command_line([f"--job-spec-uri={SPEC.job_spec_uri}"], environ)
    return output_locations(args, SPEC)


def test_a_job_writes_where_vertex_ai_points_it() -> None:
    environ = {**vertex_job_env.output_environment(BASE), "CLOUD_ML_JOB_ID": "42"}

    assert _locations(environ) == OutputLocations(BASE, f"{BASE}/model", f"{BASE}/logs")


def test_a_trial_writes_under_its_trial_folder() -> None:
    environ = {
        **vertex_job_env.output_environment(BASE, "3"),
        **vertex_job_env.job_environment("42", "3"),
    }

    assert _locations(environ) == OutputLocations(f"{BASE}/3", f"{BASE}/3/model", f"{BASE}/3/logs")


def test_without_the_variables_the_same_layout_is_derived() -> None:
    assert _locations({}) == OutputLocations(BASE, f"{BASE}/model", f"{BASE}/logs")
    assert _locations({"CLOUD_ML_TRIAL_ID": "5"}) == OutputLocations(
        f"{BASE}/5", f"{BASE}/5/model", f"{BASE}/5/logs"
    )
