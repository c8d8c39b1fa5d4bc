"""``ArtifactStore.read`` of an object stored with a ``Content-Encoding``.

Operators upload a dataset's ``pipeline.yaml``, ``schema.pbtxt`` or model code with
``gcloud storage cp -Z`` as readily as data: Cloud Storage keeps the bytes gzip-compressed
and serves them compressed to the client, which asks for gzip. The store fetches them
as stored and decompresses them itself, bounded; landed data files are read ``raw`` and
decompressed by the readers under ``validation.max_uncompressed_bytes``.
"""

from __future__ import annotations

import gzip
import zlib

import pytest

from cascade.core.errors import BadInputError
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.store import ArtifactStore, encoding_problem
from cascade.validation.schema_store import read_schema
from tests.unit.validation.fake_storage import FakeStorageClient

BUCKET = "cascade-artifacts"
CONFIG = b"validation:\n  max_file_size_bytes: 12345\n"


def _store(name: str, data: bytes, encoding: str) -> tuple[ArtifactStore, int]:
    client = FakeStorageClient()
    generation = client.put(BUCKET, name, data, content_encoding=encoding)
    return ArtifactStore(client, BUCKET), generation  # type: ignore[arg-type]


@pytest.mark.parametrize("metadata", [False, True])
def test_a_gzip_encoded_object_is_read_decompressed(metadata: bool) -> None:
    store, generation = _store("datasets/credit/pipeline.yaml", gzip.compress(CONFIG), "gzip")

    stored = store.read("datasets/credit/pipeline.yaml", metadata=metadata)

    assert stored is not None
    assert (stored.data, stored.generation, stored.content_encoding) == (CONFIG, generation, "")


def test_raw_keeps_the_bytes_as_stored_with_their_encoding() -> None:
    compressed = gzip.compress(CONFIG)
    store, _ = _store("landing/x.csv", compressed, "gzip")

    stored = store.read("landing/x.csv", raw=True)

    assert stored is not None
    assert (stored.data, stored.content_encoding) == (compressed, "gzip")


def test_concatenated_gzip_members_are_read_whole() -> None:
    store, _ = _store("m.yaml", gzip.compress(CONFIG[:10]) + gzip.compress(CONFIG[10:]), "gzip")

    stored = store.read("m.yaml")

    assert stored is not None
    assert stored.data == CONFIG


def test_an_encoded_object_that_expands_past_the_limit_is_bad_input_naming_it() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(b"x" * (8 << 20)) + compressor.flush()  # 8 MiB from ~8 KiB
    store, _ = _store("datasets/credit/schema.pbtxt", bomb, "gzip")

    with pytest.raises(BadInputError, match="expands to more than 1048576 bytes") as caught:
        store.read("datasets/credit/schema.pbtxt", max_decoded_bytes=1 << 20)

    assert f"gs://{BUCKET}/datasets/credit/schema.pbtxt" in str(caught.value)
    at_limit = store.read("datasets/credit/schema.pbtxt", max_decoded_bytes=8 << 20)
    assert at_limit is not None
    assert len(at_limit.data) == 8 << 20


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        pytest.param(gzip.compress(CONFIG)[:-12], "truncated", id="truncated"),
        pytest.param(b"\x1f\x8b\x08\x00 not gzip at all", "not valid gzip", id="corrupt"),
        pytest.param(CONFIG, "not valid gzip", id="labelled-gzip-stored-plain"),
    ],
)
def test_corrupt_encoded_bytes_are_bad_input(stored: bytes, problem: str) -> None:
    store, _ = _store("c.yaml", stored, "gzip")

    with pytest.raises(BadInputError, match=problem):
        store.read("c.yaml")


@pytest.mark.parametrize("encoding", ["br", "zstd", "deflate", "gzip, br", " BR "])
def test_a_compression_cloud_storage_does_not_decompress_is_refused_by_name(
    encoding: str,
) -> None:
    store, _ = _store("c.yaml", b"\x8b\x05\x80compressed", encoding)

    with pytest.raises(BadInputError, match="decompresses only gzip") as caught:
        store.read("c.yaml")

    assert f"Content-Encoding: {encoding.strip()}" in str(caught.value)
    assert store.read("c.yaml", raw=True) is not None  # a reader that decodes itself


@pytest.mark.parametrize("encoding", ["", "identity", "utf-8", "text/plain"])
def test_labels_that_compress_nothing_leave_the_bytes_as_stored(encoding: str) -> None:
    store, _ = _store("c.yaml", CONFIG, encoding)

    stored = store.read("c.yaml")

    assert stored is not None
    assert stored.data == CONFIG
    assert encoding_problem(encoding) == ""


def test_a_pipeline_config_and_a_schema_uploaded_with_z_are_read() -> None:
    """The readers of what operators upload (``cascade schema push`` writes plain, an
    operator's ``gcloud storage cp -Z`` does not) see the plain text."""
    schema = b'feature { name: "amount" type: FLOAT }\n'
    client = FakeStorageClient()
    client.put(
        BUCKET, "datasets/credit/pipeline.yaml", gzip.compress(CONFIG), content_encoding="gzip"
    )
    client.put(
        BUCKET, "datasets/credit/schema.pbtxt", gzip.compress(schema), content_encoding="gzip"
    )
    store = ArtifactStore(client, BUCKET)  # type: ignore[arg-type]

    config = load_pipeline_config(store, "credit")
    stored_schema = read_schema(store, "credit")

    assert config.validation.max_file_size_bytes == 12345
    assert stored_schema is not None
    assert [feature.name for feature in stored_schema.schema.feature] == ["amount"]
