"""The Bigtable emulator for a test module: ``from tests.fixtures_bigtable import bigtable``.

``bigtable_emulator`` (module scope) starts ``gcloud beta emulators bigtable start`` on a
free loopback port with the local cloud's own ``bigtable_spec``, waits until it accepts
connections (or exits; 30 s deadline), provisions the precomputed-answers table, and stops
the emulator's whole process group at the end. ``bigtable`` (per test) also points the
real client at it (``BIGTABLE_EMULATOR_HOST``; the autouse fixture restores the
environment after each test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cascade.localcloud.bigtable_emulator import (
    BIGTABLE_EMULATOR_ENV,
    LOCAL_BIGTABLE_INSTANCE,
    LOCAL_BIGTABLE_TABLE,
    bigtable_emulator_problem,
    bigtable_host,
    bigtable_spec,
    provision_bigtable,
)
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.processes import ManagedProcess
from tests.conftest import free_port_block

READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BigtableEmulator:
    host: str
    project: str
    instance: str
    table: str
    local: LocalCloudSettings
    port: int
    process: ManagedProcess


@pytest.fixture(scope="module")
def bigtable_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigtableEmulator]:
    problem = bigtable_emulator_problem()
    if problem:
        pytest.fail(problem)  # a missing tool is a broken machine, not a skipped test
    state_dir: Path = tmp_path_factory.mktemp("bigtable")
    local = LocalCloudSettings(state_dir=state_dir, project="cascade-test")
    port = free_port_block(1)
    env = dict(os.environ)
    process = ManagedProcess(bigtable_spec(local, env, port=port))
    process.start()
    try:
        process.wait_ready(READY_TIMEOUT_S)
        provision_bigtable(local, port=port)
        yield BigtableEmulator(
            host=bigtable_host(local, port),
            project=local.project,
            instance=LOCAL_BIGTABLE_INSTANCE,
            table=LOCAL_BIGTABLE_TABLE,
            local=local,
            port=port,
            process=process,
        )
    finally:
        process.stop()


@pytest.fixture
def bigtable(
    bigtable_emulator: BigtableEmulator, monkeypatch: pytest.MonkeyPatch
) -> BigtableEmulator:
    monkeypatch.setenv(BIGTABLE_EMULATOR_ENV, bigtable_emulator.host)
    return bigtable_emulator
