"""URI storage: gs:// through artifact stores, local paths, safe directory mirroring."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.core.errors import BadInputError
from cascade.trainer.storage import TrainerStorage, split_gcs_uri
from tests.unit.trainer.conftest import MemoryBuckets


def test_trees_round_trip_between_buckets_and_local_directories(
    storage: TrainerStorage, buckets: MemoryBuckets, tmp_path: Path
) -> None:
    source = tmp_path / "export"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"pb")
    (source / "variables" / "variables.index").write_bytes(b"idx")

    written = storage.upload_tree(source, "gs://models/credit/v1/")
    copy = storage.download_tree("gs://models/credit/v1", tmp_path / "copy")

    assert written == [
        "gs://models/credit/v1/saved_model.pb",
        "gs://models/credit/v1/variables/variables.index",
    ]
    assert sorted(buckets("models").list_names("")) == [
        "credit/v1/saved_model.pb",
        "credit/v1/variables/variables.index",
    ]
    assert (copy / "variables" / "variables.index").read_bytes() == b"idx"
    assert storage.list_tree("gs://models/credit") == [
        "v1/saved_model.pb",
        "v1/variables/variables.index",
    ]


def test_object_names_that_escape_the_directory_are_refused(
    storage: TrainerStorage, buckets: MemoryBuckets, tmp_path: Path
) -> None:
    buckets("models").write("m/../../etc/passwd", b"x")

    with pytest.raises(BadInputError, match="refusing"):
        storage.download_tree("gs://models/m", tmp_path / "copy")
    assert not (tmp_path / "etc").exists()


def test_local_paths_work_like_uris(storage: TrainerStorage, tmp_path: Path) -> None:
    storage.write_bytes(str(tmp_path / "out" / "metrics.json"), b"{}")

    assert storage.read_bytes(str(tmp_path / "out" / "metrics.json")) == b"{}"
    assert storage.list_tree(str(tmp_path / "out")) == ["metrics.json"]
    with pytest.raises(BadInputError, match="does not exist"):
        storage.read_bytes(str(tmp_path / "missing"))


def test_missing_objects_and_empty_trees_are_bad_input(
    storage: TrainerStorage, tmp_path: Path
) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        storage.read_bytes("gs://b/nothing")
    with pytest.raises(BadInputError, match="no objects"):
        storage.download_tree("gs://b/nothing", tmp_path)
    with pytest.raises(BadInputError):
        split_gcs_uri("gs:///name")
