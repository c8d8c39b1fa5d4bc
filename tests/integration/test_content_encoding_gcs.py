"""A landed object stored with ``Content-Encoding: gzip``, through the real storage client
and the local cloud's Cloud Storage (fake-gcs-server).

Cloud Storage keeps such an object compressed (``gcloud storage cp -Z``) and serves it
compressed to a request that accepts gzip, as the client's always does; the client then
decompresses the whole body itself, with no limit (google-cloud-storage
``_GzipDecoder``). A few hundred KiB can expand to gigabytes and kill the function
holding them, on every retry. Cascade's store reads the bytes as stored and its readers
decompress them bounded, as a ``.csv.gz``.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from google.cloud import storage

from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.store import ArtifactStore
from tests.integration.fake_gcs import gcs_fixture  # noqa: F401 - the `gcs` fixture

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = b"id,score\n" + b"".join(b"%d,%d.5\n" % (i, i % 7) for i in range(2000))
BOMB_EXPANDS_TO = 1 << 30  # 1 GiB of rows "1,2": about 1 MiB stored
LIMIT = 16 << 20  # the bomb's read: validation.max_uncompressed_bytes


def _upload_encoded(client: storage.Client, name: str, data: bytes) -> int:
    blob = client.bucket("landing").blob(name)
    blob.content_encoding = "gzip"
    blob.upload_from_string(data, content_type="text/csv")
    return int(blob.generation)


def test_the_store_reads_the_bytes_as_stored_and_reports_the_encoding(
    gcs: tuple[str, storage.Client],
) -> None:
    _, client = gcs
    stored = gzip.compress(DATA)
    generation = _upload_encoded(client, "shop/orders.csv", stored)
    store = ArtifactStore(client, "landing")

    info = store.stat("shop/orders.csv", generation=generation)
    read = store.read("shop/orders.csv", generation=generation, raw=True)
    decoded = store.read("shop/orders.csv", generation=generation)
    with store.open_read("shop/orders.csv", generation=generation, chunk_size=4096) as stream:
        streamed = stream.read()

    assert info is not None
    assert (info.size, info.content_encoding) == (len(stored), "gzip")
    assert read is not None
    assert read.data == streamed == stored
    assert read.content_encoding == "gzip"  # from the download's own response header
    assert decoded is not None
    assert (decoded.data, decoded.generation) == (DATA, generation)
    # The control: the stock download undoes the encoding itself, whole.
    assert client.bucket("landing").blob("shop/orders.csv").download_as_bytes() == DATA


def test_a_config_uploaded_with_z_is_read_as_its_text(gcs: tuple[str, storage.Client]) -> None:
    """An operator's ``gcloud storage cp -Z pipeline.yaml``: the config reader sees YAML."""
    _, client = gcs
    text = b"validation:\n  max_file_size_bytes: 12345\n"
    blob = client.bucket("landing").blob("datasets/shop/pipeline.yaml")
    blob.content_encoding = "gzip"
    blob.upload_from_string(gzip.compress(text), content_type="application/yaml")

    config = load_pipeline_config(ArtifactStore(client, "landing"), "shop")

    assert config.validation.max_file_size_bytes == 12345


_MEASURE = textwrap.dedent(
    """
    import resource, sys
    from google.auth.credentials import AnonymousCredentials
    from cascade.core.errors import BadInputError
    from cascade.core.messages import ObjectRef
    from cascade.core.store import ArtifactStore, new_storage_client
    from cascade.core.validation_config import ValidationConfig
    from cascade.steps.validate import _landed_source
    from cascade.validation.reader import read_batches

    client = new_storage_client(project="local", credentials=AnonymousCredentials(),
                                client_options={{"api_endpoint": sys.argv[1]}})

    class Context:
        def store(self, bucket):
            return ArtifactStore(client, bucket)

    ref = ObjectRef(bucket="landing", name="shop/bomb.csv", generation=int(sys.argv[2]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        config = ValidationConfig(max_uncompressed_bytes=int(sys.argv[3]))
        for _ in read_batches(_landed_source(Context(), ref), config):
            pass
        print("READ")
    except BadInputError as error:
        print("REFUSED", error)
    print("GROWN_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
)


def test_an_encoded_bomb_is_refused_in_bounded_memory(gcs: tuple[str, storage.Client]) -> None:
    """In a fresh process, the validate step's read of a 1 GiB expansion: read up to the
    decompressed-size limit, refused there as bad input naming the file, and the peak
    memory grows by what the reader holds (about 140 MiB here, whatever the limit), not
    by the expansion (the client's own decompression: over 1 GiB)."""
    endpoint, client = gcs
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    chunk = b"1,2\n" * (1 << 18)  # 1 MiB
    bomb = compressor.compress(b"a,b\n")
    bomb += b"".join(compressor.compress(chunk) for _ in range(BOMB_EXPANDS_TO >> 20))
    bomb += compressor.flush()
    generation = _upload_encoded(client, "shop/bomb.csv", bomb)

    done = subprocess.run(
        [sys.executable, "-c", _MEASURE.format(), endpoint, str(generation), str(LIMIT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert "REFUSED" in lines, done.stdout
    assert "gs://landing/shop/bomb.csv" in lines["REFUSED"]
    assert "max_uncompressed_bytes" in lines["REFUSED"]
    grown_bytes = int(lines["GROWN_KIB"]) * 1024
    assert grown_bytes < BOMB_EXPANDS_TO // 4, f"peak grew by {grown_bytes} bytes"
