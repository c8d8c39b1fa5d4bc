"""The CLI layer under the console's model actions: ``cascade rollback`` records who and
why through the deployer the console uses too (``serving_deployer``), and ``cascade
console``'s TensorBoard launcher does what ``cascade tensorboard`` does (copy the run's
event files, run TensorBoard on 127.0.0.1), one process per run, stopped on exit.
TensorBoard itself is replaced by a sleeping Python process (the command it would run is
asserted); the copy is the real one."""

from __future__ import annotations

import getpass
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import create_autospec

import pytest
import requests
from click.testing import CliRunner

from cascade.cli import console as console_cli
from cascade.cli import models as models_cli
from cascade.cli.console import TensorBoardLauncher
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, TransientError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.runs import run_id_for_object
from cascade.core.settings import Settings
from cascade.deploy.local_deployer import LocalDeployer
from cascade.localcloud import control
from cascade.serving.state import read_serving_state
from tests.console.builders import T0
from tests.console.models_builders import MODEL_SERVER, deploy, models_console


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> MemoryArtifactStore:
    """Two versions of credit (v2 serving) and the CLI wired to them: its step context
    reads this bucket, its deployer is the local one (HTTP session spec'd)."""
    console = models_console()
    deploy(console, console.add_run("credit", 1), ["credit/jan.csv"])
    deploy(console, console.add_run("credit", 2), ["credit/feb.csv"])
    context = SimpleNamespace(artifacts=console.artifacts, settings=Settings())
    monkeypatch.setattr(models_cli, "_settings", lambda from_env: Settings())
    monkeypatch.setattr(StepContext, "from_settings", classmethod(lambda cls, settings: context))
    session = create_autospec(requests.Session, instance=True)

    def deployer(artifacts: Any, settings: Settings, from_env: bool) -> LocalDeployer:
        return LocalDeployer(artifacts, MODEL_SERVER, clock=lambda: T0, session=session)

    monkeypatch.setattr(models_cli, "serving_deployer", deployer)
    return console.artifacts


def test_cascade_rollback_records_its_actor_and_reason(deployed: MemoryArtifactStore) -> None:
    result = CliRunner().invoke(
        models_cli.rollback, ["credit", "--reason", "v2  over-predicts", "--actor", "ops@desk"]
    )

    assert result.exit_code == 0, result.output
    assert "version 2 rolled back; version 1 serves 100%" in result.output
    found = read_serving_state(deployed, "credit")
    assert found is not None
    event = found[0].history[-1]
    assert (event.action, event.actor, event.reason) == ("rollback", "ops@desk", "v2 over-predicts")


def test_cascade_rollback_names_the_local_user_by_default(deployed: MemoryArtifactStore) -> None:
    result = CliRunner().invoke(models_cli.rollback, ["credit"])

    assert result.exit_code == 0, result.output
    found = read_serving_state(deployed, "credit")
    assert found is not None
    assert found[0].history[-1].actor == f"{getpass.getuser()}@{socket.gethostname()}"


def test_the_local_deployer_needs_a_running_local_cloud(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control, "status", lambda local: None)

    with pytest.raises(TransientError, match="cascade up"):
        models_cli.serving_deployer(MemoryArtifactStore("a"), Settings(), from_env=False)


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, int]]:
    asked: list[tuple[Path, int]] = []

    def command(logdir: Path, port: int) -> list[str]:
        asked.append((logdir, port))
        return [sys.executable, "-c", "import time; time.sleep(120)"]

    monkeypatch.setattr(console_cli, "tensorboard_command", command)
    return asked


def test_a_run_without_logs_is_refused_with_why(
    tmp_path: Path, commands: list[tuple[Path, int]]
) -> None:
    run_id = run_id_for_object("credit", "landing", "credit/1.csv", 1)
    launcher = TensorBoardLauncher(MemoryArtifactStore("cascade-artifacts"), tmp_path)

    with pytest.raises(BadRequestError, match=f"run {run_id} has no TensorBoard logs yet"):
        launcher(run_id)

    assert commands == []


def test_it_copies_the_logs_and_starts_one_tensorboard_per_run(
    tmp_path: Path, commands: list[tuple[Path, int]]
) -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    run_id = run_id_for_object("credit", "landing", "credit/1.csv", 1)
    artifacts.write(f"runs/{run_id}/training/logs/train/events.out.tfevents.1", b"event")
    launcher = TensorBoardLauncher(artifacts, tmp_path)

    try:
        address = launcher(run_id)
        again = launcher(run_id)
    finally:
        launcher.close()

    assert address == again
    assert address.startswith("http://127.0.0.1:")
    assert len(commands) == 1
    logdir, port = commands[0]
    assert address == f"http://127.0.0.1:{port}/"
    assert logdir == tmp_path / run_id
    assert (logdir / "train" / "events.out.tfevents.1").read_bytes() == b"event"
