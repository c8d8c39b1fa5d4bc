"""A local BigQuery for a test module: bqemulator started the way ``cascade up`` starts
it (``bigquery_spec``), on free loopback ports, its state in the test's temporary folder.

Use it by importing the fixtures into a test module::

    from tests.bigquery_emulator import bigquery_client, bigquery_local  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import google.cloud.bigquery as bigquery
import pytest

from cascade.core.warehouse import make_bigquery_client
from cascade.localcloud.bigquery_emulator import bigquery_spec
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.processes import ManagedProcess, free_loopback_port

REPO_ROOT = Path(__file__).resolve().parents[1]
START_DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def bigquery_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloudSettings]:
    """The local-cloud settings of a running local BigQuery (``bigquery_url`` is set)."""
    local = LocalCloudSettings(
        state_dir=tmp_path_factory.mktemp("bigquery-state"),
        repo_root=REPO_ROOT,
        bigquery_port=free_loopback_port(),
        bigquery_grpc_port=free_loopback_port(),
    )
    process = ManagedProcess(bigquery_spec(local, {"PATH": "/usr/bin:/bin"}))
    process.start()
    try:
        process.wait_ready(START_DEADLINE_S)
        yield local
    finally:
        process.stop()


@pytest.fixture(scope="module")
def bigquery_client(bigquery_local: LocalCloudSettings) -> Iterator[bigquery.Client]:
    """The real ``google-cloud-bigquery`` client, pointed at the local BigQuery."""
    client = make_bigquery_client(bigquery_local.runtime_settings())
    yield client
    client.close()
