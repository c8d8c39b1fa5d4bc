"""cloudbuild.yaml: the CI/CD stages, their order, and the main-branch guard on apply."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD = REPO_ROOT / "cloudbuild.yaml"

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def steps() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(CLOUDBUILD.read_text(encoding="utf-8"))
    return {step["id"]: step for step in document["steps"]}


def _depends_on(steps: dict[str, dict[str, Any]], step_id: str) -> set[str]:
    """Every step that ``step_id`` waits for, directly or not."""
    found: set[str] = set()
    pending = [w for w in steps[step_id].get("waitFor", []) if w != "-"]
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending.extend(w for w in steps[current].get("waitFor", []) if w != "-")
    return found


def _script(step: dict[str, Any]) -> str:
    return " ".join(str(arg) for arg in step.get("args", []))


def test_every_step_has_an_id_and_waits_only_for_earlier_steps(
    steps: dict[str, dict[str, Any]],
) -> None:
    order = list(steps)
    for position, step_id in enumerate(order):
        for dependency in steps[step_id].get("waitFor", []):
            assert dependency == "-" or dependency in order[:position], (step_id, dependency)


def test_stages_run_in_order(steps: dict[str, dict[str, Any]]) -> None:
    assert {"lint-test", "checkov", "terraform-fmt"} <= _depends_on(steps, "package-functions")
    assert {"package-functions", "trainer-image"} <= _depends_on(steps, "plan")
    assert "plan" in _depends_on(steps, "apply")
    assert "apply" in _depends_on(steps, "verify-deployment")


def test_apply_and_verify_only_on_the_deploy_branch(steps: dict[str, dict[str, Any]]) -> None:
    for step_id in ("apply", "verify-deployment"):
        assert '"${BRANCH_NAME}" != "${_DEPLOY_BRANCH}"' in _script(steps[step_id]), step_id
    assert "apply -auto-approve tfplan" in _script(steps["apply"])
    assert "cascade verify-deployment" in _script(steps["verify-deployment"])


def test_ci_runs_checkov_fmt_and_tests(steps: dict[str, dict[str, Any]]) -> None:
    assert "checkov --config-file infra/.checkov.yaml" in _script(steps["checkov"])
    assert steps["terraform-fmt"]["args"][:2] == ["fmt", "-check"]
    assert "pytest" in _script(steps["lint-test"])
    assert "mypy" in _script(steps["lint-test"])


def test_shell_variables_are_not_cloud_build_substitutions() -> None:
    """Cloud Build replaces $name; a shell variable must be written $$name."""
    text = CLOUDBUILD.read_text(encoding="utf-8")

    assert re.findall(r"(?<!\$)\$[a-z][a-z0-9_]*", text) == []
