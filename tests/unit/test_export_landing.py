"""The local bridge from the local BigQuery's export folder into the GCS emulator, and
which landing an extract function uses where."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.core.export_landing import (
    CloudExportLanding,
    LocalExportBridge,
    export_landing_for,
    local_export_root,
)
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.settings import Settings

PREFIX = "datasets/orders/extraction/00000000/staging/0/"


@pytest.fixture
def store() -> MemoryArtifactStore:
    return MemoryArtifactStore("art-bkt")


def bridge(root: Path, store: MemoryArtifactStore) -> LocalExportBridge:
    def open_store(bucket: str) -> MemoryArtifactStore:
        assert bucket == "art-bkt"
        return store

    return LocalExportBridge(root, open_store)


def test_the_shards_of_the_prefix_are_uploaded_where_bigquery_would_write_them(
    tmp_path: Path, store: MemoryArtifactStore
) -> None:
    folder = tmp_path / "art-bkt" / PREFIX
    folder.mkdir(parents=True)
    (folder / "part-000000000000.parquet").write_bytes(b"PAR1 zero")
    (folder / "part-000000000001.parquet").write_bytes(b"PAR1 one")
    (folder / "notes.txt").write_bytes(b"not a shard")
    (folder / "part-000000000002.parquet").symlink_to(tmp_path / "elsewhere")
    other = tmp_path / "art-bkt" / "datasets/orders/extraction/00000000/staging/1"
    other.mkdir(parents=True)
    (other / "part-000000000000.parquet").write_bytes(b"another attempt")

    bridge(tmp_path, store).land(f"gs://art-bkt/{PREFIX}")

    assert sorted(store.objects) == [
        f"{PREFIX}part-000000000000.parquet",
        f"{PREFIX}part-000000000001.parquet",
    ]
    assert store.objects[f"{PREFIX}part-000000000001.parquet"].data == b"PAR1 one"
    assert sorted(path.name for path in folder.iterdir()) == [
        "notes.txt",
        "part-000000000002.parquet",
    ]
    assert (other / "part-000000000000.parquet").exists()


def test_nothing_written_lands_nothing(tmp_path: Path, store: MemoryArtifactStore) -> None:
    bridge(tmp_path, store).land(f"gs://art-bkt/{PREFIX}")

    assert store.objects == {}


@pytest.mark.parametrize(
    "prefix",
    [
        "gs://art-bkt/../../etc/",
        "gs://art-bkt/a/../../",
        "gs://art-bkt/./a/",
        "gs://art-bkt/a",
        "gs://art-bkt//a/",
        "file:///etc/",
        "gs://art-bkt/a b/",
        "gs://ART/a/",
    ],
)
def test_a_prefix_that_could_leave_the_export_folder_is_refused(
    tmp_path: Path, store: MemoryArtifactStore, prefix: str
) -> None:
    with pytest.raises(ValueError, match="not an export prefix"):
        bridge(tmp_path, store).land(prefix)


def test_the_bridge_is_used_only_under_the_local_bigquery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: MemoryArtifactStore
) -> None:
    monkeypatch.setenv("CASCADE_LOCAL_STATE_DIR", str(tmp_path))

    cloud = export_landing_for(Settings(), lambda bucket: store)
    local = export_landing_for(
        Settings(bigquery_emulator_host="http://127.0.0.1:9"), lambda bucket: store
    )

    assert isinstance(cloud, CloudExportLanding)
    assert isinstance(local, LocalExportBridge)
    assert local_export_root(tmp_path) == tmp_path / "bigquery" / "gcs"


def test_a_local_bigquery_without_the_state_folder_is_a_setup_error(
    monkeypatch: pytest.MonkeyPatch, store: MemoryArtifactStore
) -> None:
    monkeypatch.delenv("CASCADE_LOCAL_STATE_DIR", raising=False)

    with pytest.raises(RuntimeError, match="CASCADE_LOCAL_STATE_DIR"):
        export_landing_for(Settings(bigquery_emulator_host="http://127.0.0.1:9"), lambda b: store)
