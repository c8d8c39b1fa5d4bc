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


# ---------------------------------------------------------------- issue 12, finding 8

DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SERVING_DOCKERFILE = REPO_ROOT / "shared" / "Dockerfile.serving"


def _pytest_steps(steps: dict[str, dict[str, Any]]) -> list[str]:
    return [step_id for step_id, step in steps.items() if "pytest" in _script(step)]


def test_the_whole_suite_with_its_emulators_runs_before_anything_is_applied(
    steps: dict[str, dict[str, Any]],
) -> None:
    [test_step] = _pytest_steps(steps)
    script = _script(steps[test_step])

    assert "not integration" not in script  # integration and e2e included, as `make test`
    assert re.search(r"pytest -c shared/pyproject\.toml --rootdir \. tests\s*$", script)
    for tool in ("google-cloud-cli-pubsub-emulator", "openjdk-17", "lint-imports"):
        assert tool in script, tool
    for later in ("apply", "plan", "trainer-image", "serving-image", "artifact-repository"):
        assert test_step in _depends_on(steps, later), later


def test_the_images_are_built_pushed_and_passed_to_terraform(
    steps: dict[str, dict[str, Any]],
) -> None:
    for step_id, dockerfile, output in (
        ("trainer-image", "shared/Dockerfile.trainer", "trainer_image.txt"),
        ("serving-image", "shared/Dockerfile.serving", "serving_image.txt"),
        ("console-image", "shared/Dockerfile.console", "console_image.txt"),
    ):
        script = _script(steps[step_id])
        assert f"docker build -f {dockerfile}" in script, step_id
        assert "docker push" in script, step_id
        assert f"/workspace/{output}" in script, step_id
        assert step_id in _depends_on(steps, "plan")
    plan = _script(steps["plan"])
    assert '-var="serving_image=$(cat /workspace/serving_image.txt)"' in plan
    assert '-var="trainer_image=$(cat /workspace/trainer_image.txt)"' in plan
    assert '-var="console_image=$(cat /workspace/console_image.txt)"' in plan


def test_the_images_repository_exists_before_the_first_push(
    steps: dict[str, dict[str, Any]],
) -> None:
    creating = [
        step_id
        for step_id, step in steps.items()
        if "gcloud artifacts repositories create" in _script(step)
    ]
    assert creating, "no step creates the Artifact Registry repository"
    [create] = creating
    script = _script(steps[create])
    assert "gcloud artifacts repositories describe" in script  # only when missing
    assert "--repository-format=docker" in script
    pushes = [step_id for step_id, step in steps.items() if "docker push" in _script(step)]
    assert len(pushes) >= 4, pushes  # the trainer, serving, Beam and console images
    for push in pushes:
        assert create in _depends_on(steps, push), f"{push} may push before {create}"
    assert "import" in _script(steps["plan"])  # Terraform takes it over
    assert "google_artifact_registry_repository.images" in _script(steps["plan"])


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a path is left out when it or a parent folder matches."""
    import fnmatch

    parts = path.split("/")
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!")
        candidates = [body]
        if body.startswith("**/"):
            candidates += [body[3:]]
        if any(fnmatch.fnmatchcase(prefix, c) for prefix in prefixes for c in candidates):
            ignored = not negate
    return ignored


def test_the_docker_build_context_leaves_out_venvs_state_and_caches() -> None:
    assert DOCKERIGNORE.is_file(), "no .dockerignore at the repository root"
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    left_out = [
        ".venv/lib/python3.11/site-packages/tensorflow/__init__.py",
        ".venv-infra/bin/checkov",
        ".cascade/state.json",
        ".git/HEAD",
        "build/functions/manifest.json",
        "shared/src/cascade/__pycache__/settings.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        "shared/build/lib/cascade/__init__.py",
    ]
    kept = [
        "requirements.txt",
        "shared/pyproject.toml",
        "shared/README.md",
        "shared/src/cascade/serving/request_rules.py",
        "shared/src/cascade/trainer/task.py",
        "shared/Dockerfile.trainer",
        "shared/Dockerfile.serving",
        "shared/Dockerfile.console",
    ]
    for path in left_out:
        assert _ignored(path, patterns), path
    for path in kept:
        assert not _ignored(path, patterns), path


def test_the_serving_image_is_the_model_server_on_vertex_ai_s_contract() -> None:
    text = SERVING_DOCKERFILE.read_text(encoding="utf-8")

    assert "ARG DEPENDENCY_GROUP=serving" in text
    assert '--constraint /tmp/constraints.txt "./shared[${DEPENDENCY_GROUP}]"' in text
    assert 'ENTRYPOINT ["python", "-m", "cascade.serving"]' in text
    for variable in ("AIP_HTTP_PORT=8080", "AIP_HEALTH_ROUTE=", "AIP_PREDICT_ROUTE="):
        assert variable in text, variable
    assert "CASCADE_SERVING_HOST=0.0.0.0" in text  # Vertex AI connects from outside
