"""``cascade model-module push``: what it stores, and what it refuses (names and content)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cascade.cli import model_module_commands
from cascade.cli.main import cli
from cascade.core.errors import BadInputError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.model_modules import (
    MAX_MODULE_BYTES,
    experiment_module_name,
    pin_model_module,
    stage_experiment_module,
)

SOURCE = b"import keras\n\n\ndef build_model(context):\n    return keras.Sequential()\n"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> MemoryArtifactStore:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    monkeypatch.setattr(model_module_commands, "_artifacts", lambda from_env: artifacts)
    return artifacts


def _push(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["model-module", "push", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _module_file(tmp_path: Path, data: bytes = SOURCE, name: str = "churn.py") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_push_stores_the_file_and_prints_uri_generation_and_hash(
    store: MemoryArtifactStore, tmp_path: Path
) -> None:
    code, output = _push("credit", str(_module_file(tmp_path)))

    assert code == 0, output
    name = "datasets/credit/models/churn.py"
    stored = store.read(name)
    assert stored is not None
    assert stored.data == SOURCE
    assert f"gs://cascade-artifacts/{name}#{stored.generation}" in output
    assert f"generation  {stored.generation}" in output
    assert hashlib.sha256(SOURCE).hexdigest() in output
    assert store.objects[name].content_type == "text/x-python"
    assert pin_model_module(store, "credit", "models/churn.py").generation == stored.generation


def test_push_with_a_name_stores_it_there(store: MemoryArtifactStore, tmp_path: Path) -> None:
    code, output = _push("credit", str(_module_file(tmp_path)), "--name", "models/v2/net.py")

    assert code == 0, output
    assert list(store.objects) == ["datasets/credit/models/v2/net.py"]


@pytest.mark.parametrize(
    "name",
    [
        "../pipeline.py",
        "models/../../other/x.py",
        "/etc/x.py",
        "models\\x.py",
        "models/x.py\n",
        "models/\nx.py",
        "models//x.py",
        "models/x.txt",
        "",
    ],
)
def test_push_refuses_a_name_that_is_not_a_relative_module_name(
    store: MemoryArtifactStore, tmp_path: Path, name: str
) -> None:
    code, output = _push("credit", str(_module_file(tmp_path)), "--name", name)

    assert code == 1
    assert "invalid model module name" in output
    assert store.objects == {}


def test_push_refuses_a_file_whose_name_cannot_be_the_default_object_name(
    store: MemoryArtifactStore, tmp_path: Path
) -> None:
    code, output = _push("credit", str(_module_file(tmp_path, name="my model.py")))

    assert code == 1
    assert "invalid model module name" in output
    assert store.objects == {}


def test_push_refuses_an_invalid_dataset_name(store: MemoryArtifactStore, tmp_path: Path) -> None:
    code, output = _push("../credit", str(_module_file(tmp_path)))

    assert code == 1
    assert "invalid dataset name" in output
    assert store.objects == {}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe\x00\x01weights", "not UTF-8"),
        (b"x = 1\x00\n", "NUL"),
        (b"def build_model(:\n", "not valid Python"),
        (b"#" * (MAX_MODULE_BYTES + 1), "at most 1048576"),
    ],
    ids=["binary", "nul", "syntax", "too-big"],
)
def test_push_refuses_content_that_is_not_a_small_python_text(
    store: MemoryArtifactStore, tmp_path: Path, data: bytes, reason: str
) -> None:
    path = _module_file(tmp_path, data)

    code, output = _push("credit", str(path))

    assert code == 1
    assert reason in output
    assert "churn.py" in output  # names the file
    assert "Traceback" not in output
    assert store.objects == {}


def test_a_module_of_exactly_one_mebibyte_is_accepted(
    store: MemoryArtifactStore, tmp_path: Path
) -> None:
    code, output = _push("credit", str(_module_file(tmp_path, b"#" * MAX_MODULE_BYTES)))

    assert code == 0, output


def test_an_experiment_module_is_stored_once_by_its_content() -> None:
    store = MemoryArtifactStore("cascade-artifacts")

    first = stage_experiment_module(store, "credit", SOURCE)
    again = stage_experiment_module(store, "credit", SOURCE)
    other = stage_experiment_module(store, "credit", SOURCE + b"# tuned\n")

    name = experiment_module_name(SOURCE)
    assert name == f"models/experiments/{hashlib.sha256(SOURCE).hexdigest()[:16]}.py"
    assert first == again
    assert first.uri == f"gs://cascade-artifacts/datasets/credit/{name}"
    assert other.uri != first.uri
    assert len(store.objects) == 2


def test_an_experiment_module_object_with_other_bytes_is_replaced() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    name = f"datasets/credit/{experiment_module_name(SOURCE)}"
    store.write(name, b"x = 'tampered'" + b" " * (len(SOURCE) - 14))

    staged = stage_experiment_module(store, "credit", SOURCE)

    stored = store.read(name)
    assert stored is not None
    assert stored.data == SOURCE
    assert staged.generation == stored.generation
    assert staged.sha256 == hashlib.sha256(SOURCE).hexdigest()


def test_staging_refuses_content_that_is_not_a_module() -> None:
    store = MemoryArtifactStore("cascade-artifacts")

    with pytest.raises(BadInputError, match="not UTF-8"):
        stage_experiment_module(store, "credit", b"\xff\xfe")
    assert store.objects == {}


def test_push_without_a_local_cloud_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASCADE_LOCAL_STATE_DIR", str(tmp_path / "no-cloud"))

    code, output = _push("credit", str(_module_file(tmp_path)))

    assert code == 1
    assert "local cloud is not running" in output
