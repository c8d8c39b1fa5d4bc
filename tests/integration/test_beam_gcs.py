"""The Beam pipeline reads the landed object from the local Cloud Storage twin.

fake-gcs-server (the local cloud's Cloud Storage) serves the object; the pipeline runs
as the local job service would run it (a process of .venv-beam, STORAGE_EMULATOR_HOST
in its environment) and reads the generation its event named, not the live one; its
outputs go back to the bucket (Beam's own GCS filesystem).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage

from cascade.core.validation_config import ValidationConfig
from cascade.validation.names import FileFormat
from cascade.validation.source import DataSource
from cascade.validation.statistics import compute_statistics, statistics_proto
from cascade.validation.tfmd import statistics_pb2
from tests.integration.fake_gcs import gcs_fixture  # noqa: F401 - the `gcs` fixture
from tests.unit.beam.beam_venv import PIPELINE_TIMEOUT_S, beam_python, rounded

pytestmark = pytest.mark.integration


def _run(endpoint: str, *arguments: str) -> dict[str, object]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")},
        "STORAGE_EMULATOR_HOST": endpoint,
    }
    completed = subprocess.run(
        [str(beam_python()), "-m", "cascade.beam.pipeline", *arguments],
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return {}


def _csv(rows: int, offset: int) -> bytes:
    lines = ["id,score,kind"] + [
        f"{i + offset},{(i * 7) % 13 / 3:.4f},{'abc'[i % 3]}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def _outputs(client: storage.Client, folder: str) -> tuple[dict[str, Any], object]:
    """The pipeline's result.json and its statistics (rounded for comparison)."""
    outputs = client.bucket("artifacts")
    result = json.loads(outputs.blob(f"{folder}/result.json").download_as_bytes())
    beam = statistics_pb2.DatasetFeatureStatisticsList()
    beam.ParseFromString(outputs.blob(f"{folder}/statistics.pb").download_as_bytes())
    return result, rounded(beam)


def _in_function_statistics(tmp_path: Path, data: bytes, uri: str) -> object:
    """The statistics the function's own path computes of ``data`` (rounded)."""
    local = tmp_path / "orders.csv"
    local.write_bytes(data)
    config = ValidationConfig()
    source = DataSource.local_file(str(local), FileFormat.CSV, uri=uri)
    return rounded(statistics_proto(compute_statistics(source, config), config, name=uri))


def test_the_pipeline_reads_the_event_s_generation_and_writes_to_the_bucket(
    gcs: tuple[str, storage.Client], tmp_path: Path
) -> None:
    endpoint, client = gcs
    blob = client.bucket("landing").blob("shop/orders.csv")
    blob.upload_from_string(_csv(3000, 0))
    first = blob.generation
    uri = f"gs://landing/shop/orders.csv#{first}"

    _run(
        endpoint,
        "--input=gs://landing/shop/orders.csv",
        f"--generation={first}",
        f"--uri={uri}",
        "--file_format=csv",
        "--output=gs://artifacts/dataflow/outputs/r1/validate",
        "--block_bytes=4096",
    )

    result, beam = _outputs(client, "dataflow/outputs/r1/validate")
    assert result["status"] == "ok"
    assert result["num_examples"] == 3000
    assert result["blocks"] > 3
    assert beam == _in_function_statistics(tmp_path, _csv(3000, 0), uri)


def test_an_overwritten_generation_is_refused_by_name_never_read_live(
    gcs: tuple[str, storage.Client],
) -> None:
    """As in the function (validate's ``_landed_source``): the new bytes are another
    event's file; without object versioning the event's generation is gone."""
    endpoint, client = gcs
    blob = client.bucket("landing").blob("shop/orders.csv")
    blob.upload_from_string(_csv(100, 0))
    gone = blob.generation
    blob.upload_from_string(_csv(5, 10_000))

    _run(
        endpoint,
        "--input=gs://landing/shop/orders.csv",
        f"--generation={gone}",
        f"--uri=gs://landing/shop/orders.csv#{gone}",
        "--file_format=csv",
        "--output=gs://artifacts/dataflow/outputs/r2/validate",
    )

    result = json.loads(
        client.bucket("artifacts")
        .blob("dataflow/outputs/r2/validate/result.json")
        .download_as_bytes()
    )
    assert result == {
        "status": "bad_input",
        "message": f"gs://landing/shop/orders.csv#{gone}: the object no longer exists "
        "(deleted or overwritten)",
    }


def test_a_gzip_encoded_object_is_read_as_stored_and_decompressed_once(
    gcs: tuple[str, storage.Client], tmp_path: Path
) -> None:
    """``gcloud storage cp -Z``: the object is stored gzip-compressed under
    ``Content-Encoding: gzip``. The pipeline reads the stored bytes (the client would
    otherwise decompress them whole, unbounded) as one stream, since byte ranges of the
    compressed bytes are not lines, and its statistics equal the plain file's."""
    endpoint, client = gcs
    data = _csv(3000, 0)
    blob = client.bucket("landing").blob("shop/orders.csv")
    blob.content_encoding = "gzip"
    blob.upload_from_string(gzip.compress(data), content_type="text/csv")
    uri = f"gs://landing/shop/orders.csv#{blob.generation}"

    _run(
        endpoint,
        "--input=gs://landing/shop/orders.csv",
        f"--generation={blob.generation}",
        f"--uri={uri}",
        "--file_format=csv",
        "--output=gs://artifacts/dataflow/outputs/r3/validate",
        "--block_bytes=4096",
    )

    result, beam = _outputs(client, "dataflow/outputs/r3/validate")
    assert result["status"] == "ok", result
    assert (result["num_examples"], result["blocks"]) == (3000, 1)
    assert beam == _in_function_statistics(tmp_path, data, uri)
