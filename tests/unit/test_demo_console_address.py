"""``cascade demo`` ends by naming the web console's address and how to serve it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from cascade.cli import demo
from cascade.cli.demo_acts import ActOutcome, DemoSession
from cascade.localcloud import control
from cascade.localcloud.local_settings import LocalCloudSettings


class _Client:
    """Stands for the local cloud's client: the demo's acts are replaced below."""

    def __init__(self, settings: object) -> None:
        self.settings = settings


def _demo_output(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    outcomes: list[ActOutcome],
    *,
    console_port: int = 8090,
) -> tuple[int, list[str]]:
    monkeypatch.setattr(control, "up", lambda local: None)
    monkeypatch.setattr(demo, "LocalCloudClient", _Client)
    monkeypatch.setattr(demo, "_ensure_sample_config", lambda client, console: None)
    monkeypatch.setattr(demo, "_prediction", lambda local, session: None)

    def play(session: DemoSession) -> list[ActOutcome]:
        return outcomes

    monkeypatch.setattr(demo, "_play", play)
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    local = LocalCloudSettings(state_dir=tmp_path / "state", console_port=console_port)
    code = demo.run_demo(local, rows=10, console=console)
    return code, [line for line in out.getvalue().splitlines() if line.strip()]


def _every_act_ok() -> list[ActOutcome]:
    return [
        ActOutcome(act, True, f"credit-{n:016x}", "ok")
        for n, act in enumerate(("upload", "drift", "retrain"))
    ]


def test_a_finished_demo_ends_with_the_console_address_and_its_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, lines = _demo_output(monkeypatch, tmp_path, _every_act_ok())

    assert code == 0
    assert "http://127.0.0.1:8090/" in lines[-1]
    assert "served by the local cloud" in lines[-1]


def test_a_local_cloud_without_a_console_names_the_command_that_serves_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, lines = _demo_output(monkeypatch, tmp_path, _every_act_ok(), console_port=0)

    assert code == 0
    assert "http://127.0.0.1:8090/" in lines[-1]
    assert "cascade console" in lines[-1]
    assert demo.CONSOLE_ADDRESS == "http://127.0.0.1:8090/"


def test_a_stopped_demo_still_ends_with_the_console_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outcomes = [ActOutcome("upload", False, "credit-0000000000000001", "validate failed")]

    code, lines = _demo_output(monkeypatch, tmp_path, outcomes)

    assert code == 1
    assert "http://127.0.0.1:8090/" in lines[-1]
