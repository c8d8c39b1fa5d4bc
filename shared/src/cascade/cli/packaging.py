"""Build the source zip of every deployed function, named by its content hash.

For each function of the topology this stages ``<output>/<function>/`` with

* the files of the function's source directory (``functions/<step>/``, ``main.py`` first
  among them),
* the ``cascade`` package copied from ``shared/src/cascade`` (vendored, so the function
  runs exactly the code that was tested),
* a ``requirements.txt`` with what the function runs and nothing else: the shared
  package's base ``dependencies`` plus the optional-dependency group that the function's
  topology entry names (``dependencies: function`` or ``function-vertex``), ``cascade[...]``
  references inside a group expanded, plus the function's own ``requirements.txt`` if its
  source directory has one, and
* with a lock file (``--pins requirements.txt``), a ``constraints.txt`` of every exact pin
  in it, which ``requirements.txt`` names with ``-c constraints.txt``,

then writes ``<output>/<function>-<sha256 prefix>.zip`` and ``<output>/manifest.json``,
which Terraform reads. Zips are byte-for-byte reproducible (sorted entries, fixed
timestamps and modes), so an unchanged tree yields the same names and Terraform changes
nothing, while any code or dependency change yields a new object and a new revision.
No network, no build backend: only the standard library.

Pins. A direct requirement of the group is written ``name==version`` when the lock pins
it, and as its pyproject range otherwise. Transitive dependencies are not listed: pip
resolves them at build time, and ``constraints.txt`` holds each one the lock pins
(google-api-core, grpcio, flask, ...) to the version that ``.venv`` runs and the tests
passed with. A constraint installs nothing, so the lock's trainer, local-cloud and dev
pins cost a function nothing; the lock does not pin every transitive distribution, and
those it leaves out resolve to the newest versions the pinned ones allow. Because the
constraints are the whole lock, changing any pin in it gives every function a new zip.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cascade.core.errors import InvalidConfigError
from cascade.core.topology import FunctionSpec, Topology

__all__ = [
    "FunctionPackage",
    "PackagingError",
    "RepositoryLayout",
    "build_constraints",
    "build_requirements",
    "dependency_groups",
    "deterministic_zip",
    "group_requirements",
    "package_function",
    "package_functions",
    "read_pins",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
CONSTRAINTS_NAME = "constraints.txt"
SHARED_PACKAGE_NAME = "cascade"
HASH_PREFIX_LENGTH = 16
FUNCTIONS_FRAMEWORK_FALLBACK = "functions-framework>=3.10,<4"
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_IGNORED_DIRECTORIES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
_IGNORED_SUFFIXES = (".pyc", ".pyo")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)")
_EXTRAS = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*\[([^\]]*)\]")


class PackagingError(InvalidConfigError):
    """A function cannot be packaged: its source is missing or the inputs are invalid."""


@dataclass(frozen=True)
class RepositoryLayout:
    """Where packaging finds its inputs, relative to the repository root."""

    root: Path
    shared_package: Path = Path("shared/src/cascade")
    shared_pyproject: Path = Path("shared/pyproject.toml")

    def resolve(self, relative: Path | str) -> Path:
        return self.root / relative


@dataclass(frozen=True)
class FunctionPackage:
    """One built function: its staging directory and content-hashed zip."""

    function: str
    source: str
    entry_point: str
    staging_dir: Path
    zip_path: Path
    sha256: str

    def manifest_entry(self) -> dict[str, str]:
        """The record Terraform reads; ``zip`` is relative to the manifest's folder."""
        return {
            "zip": self.zip_path.name,
            "sha256": self.sha256,
            "source": self.source,
            "entry_point": self.entry_point,
        }


def normalize_name(distribution: str) -> str:
    """PEP 503 normalized distribution name, for matching requirements to pins."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def read_pins(lock_file: Path) -> dict[str, str]:
    """Exact ``name==version`` pins of a requirements file, by normalized name.

    Lines that are not exact pins (ranges, options, URLs) are ignored.
    """
    pins: dict[str, str] = {}
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.split("#", 1)[0])
        if match:
            pins[normalize_name(match.group(1))] = match.group(3)
    return pins


def _requirement_name(requirement: str) -> str:
    match = _REQUIREMENT_NAME.match(requirement)
    if not match:
        raise PackagingError(f"cannot read requirement {requirement!r}")
    return normalize_name(match.group(1))


def _project_table(pyproject: Path) -> dict[str, object]:
    try:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PackagingError(f"cannot read {pyproject}: {error}") from error
    project = document.get("project", {})
    if not isinstance(project, dict):
        raise PackagingError(f"{pyproject}: [project] must be a table")
    return project


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PackagingError(f"{where} must be a list of strings")
    return list(value)


def shared_dependencies(pyproject: Path) -> list[str]:
    """The ``[project].dependencies`` of the shared package's pyproject.toml: the base
    that every dependency group adds to."""
    return _string_list(
        _project_table(pyproject).get("dependencies", []),
        f"{pyproject}: [project].dependencies",
    )


def dependency_groups(pyproject: Path) -> dict[str, list[str]]:
    """The ``[project.optional-dependencies]`` groups of the shared package, as written."""
    groups = _project_table(pyproject).get("optional-dependencies", {})
    if not isinstance(groups, dict):
        raise PackagingError(f"{pyproject}: [project.optional-dependencies] must be a table")
    return {
        name: _string_list(requirements, f"{pyproject}: optional-dependencies {name!r}")
        for name, requirements in groups.items()
    }


def _self_reference(requirement: str, package: str) -> list[str] | None:
    """The extras of ``package[a,b]`` (a group that includes other groups), else None."""
    if _requirement_name(requirement) != package:
        return None
    match = _EXTRAS.match(requirement)
    if not match:
        raise PackagingError(f"{requirement!r}: a group may name {package} only with extras")
    return [extra.strip() for extra in match.group(1).split(",") if extra.strip()]


def group_requirements(
    pyproject: Path, group: str, *, package: str = SHARED_PACKAGE_NAME
) -> list[str]:
    """What installing ``package[group]`` asks for: the base dependencies, then the
    group's requirements with ``package[other]`` references expanded (as pip does)."""
    groups = dependency_groups(pyproject)
    requirements = shared_dependencies(pyproject)
    seen: set[str] = set()

    def expand(name: str, via: str) -> None:
        if name not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise PackagingError(
                f"{via}: no dependency group {name!r} in {pyproject} (groups: {known})"
            )
        if name in seen:
            return
        seen.add(name)
        for requirement in groups[name]:
            extras = _self_reference(requirement.split("#", 1)[0].strip(), package)
            if extras is None:
                requirements.append(requirement)
            else:
                for extra in extras:
                    expand(extra, f"group {name!r}")

    expand(group, f"dependency group {group!r}")
    return requirements


def build_requirements(
    dependencies: Iterable[str],
    pins: Mapping[str, str],
    *,
    function_requirements: Iterable[str] = (),
    group: str | None = None,
    constraints: str | None = None,
) -> str:
    """requirements.txt text: each dependency pinned where ``pins`` knows its version.

    The function's own requirements come after the shared ones; a distribution named
    twice is listed once (the shared package's entry wins). functions-framework is always
    present, so the runtime does not pick a version of its own. ``constraints`` names a
    constraints file beside it (``-c``) that pins what the requirements pull in.
    """
    lines: dict[str, str] = {}
    for requirement in [*dependencies, *function_requirements]:
        requirement = requirement.split("#", 1)[0].strip()
        if not requirement or requirement.startswith("-"):
            continue
        name = _requirement_name(requirement)
        if name in lines:
            continue
        lines[name] = f"{name}=={pins[name]}" if name in pins else requirement
    if "functions-framework" not in lines:
        pinned = pins.get("functions-framework")
        lines["functions-framework"] = (
            f"functions-framework=={pinned}" if pinned else FUNCTIONS_FRAMEWORK_FALLBACK
        )
    source = f' from dependency group "{group}"' if group else ""
    header = (
        f"# Generated by `cascade package-functions`{source}; the cascade package is vendored.\n"
    )
    if constraints:
        header += f"-c {constraints}  # the lock's pins, for what these pull in\n"
    return header + "".join(f"{lines[name]}\n" for name in sorted(lines))


def build_constraints(pins: Mapping[str, str]) -> str:
    """constraints.txt text: every pin of the lock, sorted. Constraints install nothing;
    they fix the version of whatever the requirements bring in."""
    header = (
        "# Generated by `cascade package-functions` from the lock file: versions, not\n"
        "# installs (requirements.txt names this file with -c).\n"
    )
    return header + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def _iter_files(directory: Path) -> Iterator[Path]:
    """Regular files under ``directory``, without caches and bytecode, sorted."""
    for path in sorted(directory.rglob("*")):
        relative_parts = path.relative_to(directory).parts
        if any(part in _IGNORED_DIRECTORIES for part in relative_parts):
            continue
        if path.is_file() and not path.is_symlink() and not path.name.endswith(_IGNORED_SUFFIXES):
            yield path


def _copy_tree(source: Path, destination: Path) -> None:
    for path in _iter_files(source):
        target = destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def deterministic_zip(directory: Path) -> bytes:
    """Zip ``directory`` so that equal trees give equal bytes (sorted, fixed metadata)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in _iter_files(directory):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), _ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so external_attr means file mode
            info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return buffer.getvalue()


def _function_requirements(source_dir: Path) -> list[str]:
    requirements = source_dir / "requirements.txt"
    if not requirements.is_file():
        return []
    return requirements.read_text(encoding="utf-8").splitlines()


def stage_function(
    spec: FunctionSpec, layout: RepositoryLayout, staging_dir: Path, pins: Mapping[str, str]
) -> None:
    """Fill ``staging_dir`` (emptied first) with what the deployed function runs."""
    source_dir = layout.resolve(spec.source)
    if not (source_dir / "main.py").is_file():
        raise PackagingError(f"function {spec.name}: {source_dir / 'main.py'} does not exist")
    shared_package = layout.resolve(layout.shared_package)
    if not (shared_package / "__init__.py").is_file():
        raise PackagingError(f"shared package not found at {shared_package}")
    if spec.dependencies is None:
        raise PackagingError(
            f"function {spec.name}: its topology entry names no `dependencies` group "
            "(the optional-dependency group of shared/pyproject.toml it installs)"
        )
    dependencies = group_requirements(layout.resolve(layout.shared_pyproject), spec.dependencies)
    if staging_dir.exists():
        shutil.rmtree(staging_dir)
    staging_dir.mkdir(parents=True)
    _copy_tree(source_dir, staging_dir)
    _copy_tree(shared_package, staging_dir / "cascade")
    requirements = build_requirements(
        dependencies,
        pins,
        function_requirements=_function_requirements(source_dir),
        group=spec.dependencies,
        constraints=CONSTRAINTS_NAME if pins else None,
    )
    (staging_dir / "requirements.txt").write_text(requirements, encoding="utf-8")
    if pins:
        (staging_dir / CONSTRAINTS_NAME).write_text(build_constraints(pins), encoding="utf-8")


def _remove_stale_zips(output_dir: Path, function: str, keep: Path) -> None:
    pattern = re.compile(rf"^{re.escape(function)}-[0-9a-f]{{{HASH_PREFIX_LENGTH}}}\.zip$")
    for candidate in output_dir.glob(f"{function}-*.zip"):
        if candidate != keep and pattern.match(candidate.name):
            candidate.unlink()


def package_function(
    spec: FunctionSpec, layout: RepositoryLayout, output_dir: Path, pins: Mapping[str, str]
) -> FunctionPackage:
    """Stage one function and write its zip, named ``<function>-<sha256 prefix>.zip``."""
    staging_dir = output_dir / spec.name
    stage_function(spec, layout, staging_dir, pins)
    archive = deterministic_zip(staging_dir)
    digest = hashlib.sha256(archive).hexdigest()
    zip_path = output_dir / f"{spec.name}-{digest[:HASH_PREFIX_LENGTH]}.zip"
    if not zip_path.is_file() or zip_path.read_bytes() != archive:
        zip_path.write_bytes(archive)
    _remove_stale_zips(output_dir, spec.name, keep=zip_path)
    return FunctionPackage(
        function=spec.name,
        source=spec.source,
        entry_point=spec.entry_point,
        staging_dir=staging_dir,
        zip_path=zip_path,
        sha256=digest,
    )


def write_manifest(packages: Iterable[FunctionPackage], output_dir: Path) -> Path:
    """Write ``manifest.json`` (sorted, stable) for Terraform; returns its path."""
    document = {"functions": {p.function: p.manifest_entry() for p in packages}}
    manifest = output_dir / MANIFEST_NAME
    manifest.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def package_functions(
    topology: Topology,
    layout: RepositoryLayout,
    output_dir: Path,
    *,
    pins: Mapping[str, str] | None = None,
) -> list[FunctionPackage]:
    """Package every function of the topology into ``output_dir`` and write the manifest."""
    output_dir.mkdir(parents=True, exist_ok=True)
    packages = [
        package_function(spec, layout, output_dir, pins or {})
        for spec in sorted(topology.functions.values(), key=lambda spec: spec.name)
    ]
    write_manifest(packages, output_dir)
    return packages
