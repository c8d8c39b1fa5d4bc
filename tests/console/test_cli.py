"""``cascade console``: serves on 127.0.0.1 only and prints the address; ``--reindex``
indexes earlier runs and exits."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from cascade.cli import console as console_cli
from cascade.console import ConsoleConfig
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.paths import RunPaths
from cascade.core.run_index import INDEX_PREFIX, StoreLister
from cascade.core.settings import Settings
from tests.console.builders import T0


@pytest.fixture
def artifacts(monkeypatch: pytest.MonkeyPatch) -> MemoryArtifactStore:
    store = MemoryArtifactStore("cascade-artifacts")

    def config(settings: Settings, caller_of: Any) -> ConsoleConfig:
        return ConsoleConfig(store, StoreLister(store), RecordingBus, caller_of)

    monkeypatch.setattr(console_cli, "command_settings", lambda from_env, printer: Settings())
    monkeypatch.setattr(console_cli, "console_config", config)
    return store


def test_it_serves_on_loopback_and_prints_the_address(
    artifacts: MemoryArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(console_cli.uvicorn, "run", lambda app, **options: served.update(options))

    result = CliRunner().invoke(console_cli.console_command, ["--port", "9123"])

    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1"
    assert served["port"] == 9123
    assert "console: http://127.0.0.1:9123/" in result.output


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_a_bad_port_is_refused(artifacts: MemoryArtifactStore, port: str) -> None:
    result = CliRunner().invoke(console_cli.console_command, ["--port", port])

    assert result.exit_code == 2
    assert "--port" in result.output


def test_reindex_indexes_runs_made_before_the_index(artifacts: MemoryArtifactStore) -> None:
    run_id = "credit-0123456789abcdef"
    record = {
        "run_id": run_id,
        "dataset": "credit",
        "trigger": {"kind": "object", "uri": "gs://landing/credit/a.csv", "generation": 1},
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
    }
    artifacts.write_json(RunPaths(run_id).record, record)

    result = CliRunner().invoke(console_cli.console_command, ["--reindex"])

    assert result.exit_code == 0, result.output
    assert "indexed 1 run(s)" in result.output
    assert len(list(artifacts.list_names(INDEX_PREFIX))) == 2
