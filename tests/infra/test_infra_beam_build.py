"""The Beam pipeline's build: its venv in CI, its Flex Template image and spec.

cloudbuild.yaml installs .venv-beam before the tests, builds shared/Dockerfile.beam
(Google's Flex Template layout: the Beam SDK harness and the template launcher in one
image that is also the workers' SDK container), and after Terraform's apply writes the
template spec that cascade.jobs.dataflow_runner launches. The template's parameters are
the pipeline's arguments, exactly.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade.jobs.beam_spec import BeamMaterializeSpec, materialize_parameters
from cascade.jobs.dataflow_runner import TEMPLATE_SPEC, BeamStatisticsSpec, pipeline_parameters
from tests.infra.test_infra_cloudbuild import _depends_on, _ignored, _script

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD = REPO_ROOT / "cloudbuild.yaml"
DOCKERFILE = REPO_ROOT / "shared" / "Dockerfile.beam"
METADATA = REPO_ROOT / "shared" / "src" / "cascade" / "beam" / "template_metadata.json"
REQUIREMENTS = REPO_ROOT / "requirements-beam.txt"
PIPELINE = REPO_ROOT / "shared" / "src" / "cascade" / "beam" / "pipeline.py"

pytestmark = pytest.mark.infra

SPEC = BeamStatisticsSpec(
    run_id="r",
    dataset="d",
    input_uri="gs://landing/d/f.csv",
    generation=1,
    uri="gs://landing/d/f.csv#1",
    file_format="csv",
    validation_config="{}",
    output_uri="gs://artifacts/dataflow/outputs/r/validate",
)


@pytest.fixture(scope="module")
def steps() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(CLOUDBUILD.read_text(encoding="utf-8"))
    return {step["id"]: step for step in document["steps"]}


def _pin(package: str) -> str:
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        if line.lower().startswith(f"{package}=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{package} is not pinned in {REQUIREMENTS.name}")


def test_the_tests_get_the_beam_venv_before_they_run(steps: dict[str, dict[str, Any]]) -> None:
    script = _script(steps["lint-test"])

    install = script.index("/workspace/.venv-beam/bin/pip install --quiet")
    assert "-r requirements-beam.txt" in script[install:]
    assert "/workspace/.venv-beam/bin/pip install" in script
    assert "--no-deps -e shared" in script[install:]
    assert install < script.index("pytest -c shared/pyproject.toml")


def test_the_beam_venv_lock_is_exact_and_keeps_beam_s_own_pins() -> None:
    lines = [
        line
        for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+(\[[a-z,]+\])?==[^\s]+", line) for line in lines), (
        lines
    )
    assert _pin("apache-beam") == "2.77.0"
    assert int(_pin("protobuf").split(".")[0]) < 7
    assert int(_pin("pyarrow").split(".")[0]) < 26
    assert not any(line.lower().startswith("cascade") for line in lines)


def test_the_image_is_built_pushed_and_names_itself(steps: dict[str, dict[str, Any]]) -> None:
    script = _script(steps["beam-image"])

    assert "docker build -f shared/Dockerfile.beam" in script
    assert '--build-arg BEAM_IMAGE="${_BEAM_IMAGE}:${BUILD_ID}"' in script
    assert 'docker push "${_BEAM_IMAGE}:${BUILD_ID}"' in script
    assert "/workspace/beam_image.txt" in script
    assert {"lint-test", "artifact-repository"} <= _depends_on(steps, "beam-image")


def test_the_template_spec_is_built_where_the_runner_launches_it(
    steps: dict[str, dict[str, Any]],
) -> None:
    step = steps["beam-template"]
    script = _script(step)

    assert f'"gs://$${{artifacts}}/{TEMPLATE_SPEC}"' in script
    assert "gcloud dataflow flex-template build" in script
    assert '--image="$(cat /workspace/beam_image.txt)"' in script
    assert "--sdk-language=PYTHON" in script
    assert f"--metadata-file={METADATA.relative_to(REPO_ROOT)}" in script
    assert '!= "${_DEPLOY_BRANCH}"' in script  # deploy branch only, like apply
    assert {"apply", "beam-image"} <= _depends_on(steps, "beam-template")


def test_the_image_is_google_s_flex_template_layout_on_the_locked_beam() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")

    assert f"apache/beam_python3.11_sdk:{_pin('apache-beam')}" in text
    assert "python311-template-launcher-base" in text
    assert "FROM python:3.11-slim" in text
    assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in text
    assert "/opt/google/dataflow/python_template_launcher" in text
    assert "pip install --requirement /tmp/requirements-beam.txt" in text
    assert "pip install --no-deps /opt/cascade/shared" in text
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py" in text
    assert "ENV CASCADE_BEAM_SDK_IMAGE=${BEAM_IMAGE}" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text


def test_the_build_context_keeps_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        "requirements-beam.txt",
        "shared/pyproject.toml",
        "shared/README.md",
        "shared/src/cascade/beam/pipeline.py",
        "shared/src/cascade/beam/__main__.py",
    ):
        assert not _ignored(path, patterns), path
    assert _ignored(".venv-beam/bin/python", patterns)


def test_the_template_parameters_are_the_pipeline_arguments_exactly() -> None:
    """One template, two modes: its parameters are the union of both modes' launch
    parameters, and exactly the flags the program's entry points read."""
    metadata = json.loads(METADATA.read_text(encoding="utf-8"))
    declared = {parameter["name"] for parameter in metadata["parameters"]}
    program = "".join(
        (PIPELINE.parent / name).read_text("utf-8")
        for name in ("pipeline.py", "materialize.py", "__main__.py")
    )
    flags = set(re.findall(r'add_argument\("--(\w+)"', program))
    materialize = BeamMaterializeSpec(
        run_id="credit-r1",
        dataset="credit",
        request_uri="gs://arts/dataflow/inputs/credit-r1/materialize.json",
        output_uri="gs://arts/dataflow/outputs/credit-r1/transform",
    )
    stream_file = dataclasses.replace(SPEC, file_format="avro", record_fields=("amount",))
    launched = (
        set(pipeline_parameters(SPEC))
        | set(pipeline_parameters(stream_file))
        | set(materialize_parameters(materialize))
    )

    assert declared == launched == flags


def test_the_template_refuses_outputs_outside_the_dataflow_prefix() -> None:
    metadata = json.loads(METADATA.read_text(encoding="utf-8"))
    output = next(p for p in metadata["parameters"] if p["name"] == "output")
    (pattern,) = output["regexes"]

    assert re.fullmatch(pattern, SPEC.output_uri)
    assert not re.fullmatch(pattern, "gs://artifacts/runs/r/validation")
    assert not re.fullmatch(pattern, "/etc/passwd")
