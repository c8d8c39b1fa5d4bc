"""A fake-gcs-server of its own (the local cloud's Cloud Storage) for the Beam tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from cascade.localcloud.components import standalone_fake_gcs

START_DEADLINE_S = 20.0


@pytest.fixture(name="gcs")
def gcs_fixture(tmp_path: Path) -> Iterator[tuple[str, storage.Client]]:
    with standalone_fake_gcs(
        tmp_path / "gcs", ("landing", "artifacts"), start_deadline_s=START_DEADLINE_S
    ) as url:
        client = storage.Client(
            project="local",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": url},
        )
        yield url, client
