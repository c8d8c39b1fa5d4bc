"""BigQuery as a source against the real emulators: the local BigQuery (bqemulator,
started as ``cascade up`` starts it, ``BQEMU_GCS_LOCAL_ROOT`` in its state folder) and
fake-gcs-server, through the real clients under the extract function's topology
identity (its grants enforced as Google would).

A table with two increments gives two extractions, the second holding only the new rows
(counted in the landed Parquet shards); each landed shard passes the validate step; a
redelivered request lands nothing twice; an identity without the export's grants is
refused.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import google.cloud.bigquery as bigquery
import pyarrow.parquet as pq
import pytest
import requests
from google.api_core import exceptions as gexc

from cascade.core.claims import ClaimStore
from cascade.core.clients import make_storage_client
from cascade.core.context import StepContext
from cascade.core.errors import InvalidConfigError
from cascade.core.events import StorageObjectEvent
from cascade.core.export_landing import local_export_root
from cascade.core.fakes import RecordingBus
from cascade.core.grants import identity_for
from cascade.core.messages import DataValidated
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.runs import RunLedger
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.core.topology import load_topology
from cascade.core.warehouse import insert_rows, make_bigquery_client
from cascade.localcloud.components import fake_gcs_binary
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.processes import free_loopback_port
from cascade.steps import extract
from cascade.steps.extract import handle_extract_request
from cascade.steps.validate import handle_object_finalized
from tests.bigquery_emulator import REPO_ROOT, bigquery_local  # noqa: F401

pytestmark = pytest.mark.integration

DATASET = "orders"
TOPOLOGY = load_topology(REPO_ROOT / "infra" / "topology.yaml")
SCHEMA = [
    bigquery.SchemaField("seq", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("amount", "FLOAT64"),
    bigquery.SchemaField("region", "STRING"),
]
CONFIG = "bigquery_source:\n  table: sources.orders\n  watermark: {column: seq, type: INT64}\n"


@pytest.fixture(scope="module")
def gcs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server (memory backend) on a free loopback port."""
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "gcs.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(fake_gcs_binary()),
                "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                "-backend", "memory", "-public-host", f"127.0.0.1:{port}",
                "-external-url", url, "-log-level", "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{url}/storage/v1/b", timeout=1).ok:
                        break
                assert time.monotonic() < deadline, "fake-gcs-server never answered"
                time.sleep(0.05)  # polling a condition with a deadline
            yield url
        finally:
            process.terminate()
            process.wait(10)


@pytest.fixture(scope="module")
def admin(bigquery_local: LocalCloudSettings, gcs_url: str) -> Settings:  # noqa: F811
    """Settings without an identity (Terraform's role): buckets, dataset and table."""
    settings = bigquery_local.runtime_settings().model_copy(
        update={"storage_emulator_host": gcs_url}
    )
    storage = make_storage_client(settings)
    for bucket in (settings.landing_bucket, settings.artifacts_bucket):
        with contextlib.suppress(gexc.Conflict):
            storage.create_bucket(bucket)
    with contextlib.closing(make_bigquery_client(settings)) as client:
        client.create_dataset(settings.warehouse_dataset("sources"), exists_ok=True)
        client.create_table(
            bigquery.Table(
                f"{settings.project}.{settings.warehouse_dataset('sources')}.orders", SCHEMA
            ),
            exists_ok=True,
        )
    artifacts = ArtifactStore(storage, settings.artifacts_bucket)
    push_pipeline_config(artifacts, DATASET, CONFIG.encode(), where="pipeline.yaml")
    return settings


def context_as(settings: Settings, function: str) -> StepContext:
    """A StepContext of ``function``'s identity, its messages recorded."""
    own = settings.model_copy(
        update={
            "local_identity": identity_for(TOPOLOGY, function, settings),
            "function_name": function,
        }
    )
    storage = make_storage_client(own)
    artifacts = ArtifactStore(storage, own.artifacts_bucket)
    return StepContext(
        settings=own,
        artifacts=artifacts,
        ledger=RunLedger(artifacts),
        claims=ClaimStore(artifacts),
        bus=RecordingBus(),
        open_store=partial(ArtifactStore, storage),
    )


@pytest.fixture
def extractor(
    admin: Settings,
    bigquery_local: LocalCloudSettings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> StepContext:
    """The extract function's context; its tools made as the deployed function makes them."""
    monkeypatch.setenv("CASCADE_LOCAL_STATE_DIR", str(bigquery_local.state_dir))
    return context_as(admin, "extract")


def insert(settings: Settings, first: int, count: int) -> None:
    with contextlib.closing(make_bigquery_client(settings)) as client:
        table = client.get_table(
            f"{settings.project}.{settings.warehouse_dataset('sources')}.orders"
        )
        rows = [
            {"seq": seq, "amount": seq * 1.5, "region": ["north", "south"][seq % 2]}
            for seq in range(first, first + count)
        ]
        insert_rows(client, table, rows)


def request(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    attributes = {
        "specversion": "1.0",
        "id": f"e-{time.monotonic_ns()}",
        "source": "//pubsub.googleapis.com/projects/p/topics/cascade-extract-requests",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
    }
    message = {"data": base64.b64encode(json.dumps(body).encode()).decode(), "messageId": "1"}
    return attributes, {"message": message}


def landed_rows(settings: Settings, names: tuple[str, ...]) -> list[int]:
    landing = ArtifactStore(make_storage_client(settings), settings.landing_bucket)
    seqs: list[int] = []
    for name in names:
        stored = landing.read(name)
        assert stored is not None, name
        seqs += pq.read_table(io.BytesIO(stored.data)).column("seq").to_pylist()
    return sorted(seqs)


def validate(settings: Settings, name: str) -> list[DataValidated]:
    """The validate step on a landed shard, as its finalize event would start it."""
    landing = ArtifactStore(make_storage_client(settings), settings.landing_bucket)
    info = landing.stat(name)
    assert info is not None
    ctx = context_as(settings, "validate")
    event = StorageObjectEvent(
        event_id=f"v-{info.generation}",
        bucket=settings.landing_bucket,
        name=name,
        generation=info.generation,
        size=info.size,
        content_type="application/vnd.apache.parquet",
        time_created="",
    )
    handle_object_finalized(ctx, event)
    assert isinstance(ctx.bus, RecordingBus)
    return [m for m in ctx.bus.of_type(DataValidated) if isinstance(m, DataValidated)]


def test_two_increments_land_as_two_extractions_of_only_new_rows_each_validated(
    admin: Settings,
    extractor: StepContext,
    bigquery_local: LocalCloudSettings,  # noqa: F811
) -> None:
    insert(admin, 1, 25)
    first = handle_extract_request(extractor, *request({"dataset": DATASET}))
    insert(admin, 26, 10)
    second = handle_extract_request(extractor, *request({"dataset": DATASET, "request_id": "2"}))
    again = handle_extract_request(extractor, *request({"dataset": DATASET, "request_id": "2"}))

    [one], [two], [three] = first.extractions, second.extractions, again.extractions
    assert (one.outcome, one.low, one.high) == ("extracted", None, 25)
    assert (two.outcome, two.low, two.high) == ("extracted", 25, 35)
    assert three.outcome == "no-new-rows"
    assert landed_rows(admin, one.landed) == list(range(1, 26))
    assert landed_rows(admin, two.landed) == list(range(26, 36))
    landing = ArtifactStore(make_storage_client(admin), admin.landing_bucket)
    everything = tuple(landing.list_names(f"{DATASET}/"))
    assert sorted(everything) == sorted(one.landed + two.landed)  # nothing landed twice
    # the emulator's export folder is emptied by the bridge; staging is cleaned up
    export_root = local_export_root(bigquery_local.state_dir)
    assert not [path for path in export_root.rglob("*") if path.is_file()]
    artifacts = ArtifactStore(make_storage_client(admin), admin.artifacts_bucket)
    assert not [n for n in artifacts.list_names(f"datasets/{DATASET}/") if "/staging/" in n]
    for name in everything:
        [validated] = validate(admin, name)
        assert validated.source.name == name


def test_an_identity_without_the_exports_grants_is_refused(
    admin: Settings, extractor: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(admin, 100, 2)
    # validate's identity: no bigquery-jobs api, no read on the sources dataset
    intruder = context_as(admin, "validate")
    monkeypatch.setattr(extract, "_TOOLS", [])

    with pytest.raises(InvalidConfigError, match=r"bigquery\.jobs\.create"):
        handle_extract_request(intruder, *request({"dataset": DATASET}))


def test_the_bridge_refuses_a_prefix_outside_the_export_folder(
    extractor: StepContext,
    bigquery_local: LocalCloudSettings,  # noqa: F811
) -> None:
    from cascade.core.export_landing import LocalExportBridge

    bridge = LocalExportBridge(local_export_root(bigquery_local.state_dir), extractor.store)
    for prefix in ("gs://cascade-artifacts/../x/", "gs://cascade-artifacts/a/./", "/etc/"):
        with pytest.raises(ValueError, match="not an export prefix"):
            bridge.land(prefix)
    assert Path(bigquery_local.state_dir).is_dir()


def test_a_query_source_with_a_timestamp_watermark_extracts_increments(
    admin: Settings, extractor: StepContext
) -> None:
    sources = f"{admin.project}.{admin.warehouse_dataset('sources')}"
    query = f"SELECT seq, amount, region, ts FROM `{sources}.events` WHERE region = 'north'"
    config = (
        f"bigquery_source:\n  query: {json.dumps(query)}\n"
        "  watermark: {column: ts, type: TIMESTAMP}\n"
    )
    artifacts = ArtifactStore(make_storage_client(admin), admin.artifacts_bucket)
    push_pipeline_config(artifacts, "events", config.encode(), where="pipeline.yaml")
    with contextlib.closing(make_bigquery_client(admin)) as client:
        table = client.create_table(
            bigquery.Table(f"{sources}.events", [*SCHEMA, bigquery.SchemaField("ts", "TIMESTAMP")]),
            exists_ok=True,
        )

        def add(first: int, count: int) -> None:
            rows = [
                {
                    "seq": seq,
                    "amount": 1.0,
                    "region": ["north", "south"][seq % 2],
                    "ts": f"2026-11-30T10:{seq:02d}:00Z",
                }
                for seq in range(first, first + count)
            ]
            insert_rows(client, table, rows)

        add(0, 10)
        first = handle_extract_request(extractor, *request({"dataset": "events"}))
        add(10, 6)
        second = handle_extract_request(extractor, *request({"dataset": "events"}))

    [one], [two] = first.extractions, second.extractions
    assert (one.low, one.high) == (None, "2026-11-30T10:08:00+00:00")
    assert (two.low, two.high) == ("2026-11-30T10:08:00+00:00", "2026-11-30T10:14:00+00:00")
    assert landed_rows(admin, one.landed) == [0, 2, 4, 6, 8]
    assert landed_rows(admin, two.landed) == [10, 12, 14]


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ("sources.no_such_table", "Not found"),
        ("cascade-local.cascade_predictions.t", "Access Denied"),
        ("other-project.sources.t", "Access Denied"),
    ],
    ids=["missing-table", "outside-the-sources-dataset", "another-project"],
)
def test_a_source_the_function_cannot_read_is_a_config_error_naming_it(
    admin: Settings, extractor: StepContext, table: str, reason: str
) -> None:
    config = f"bigquery_source:\n  table: {table}\n  watermark: {{column: seq, type: INT64}}\n"
    artifacts = ArtifactStore(make_storage_client(admin), admin.artifacts_bucket)
    push_pipeline_config(artifacts, "elsewhere", config.encode(), where="pipeline.yaml")

    with pytest.raises(InvalidConfigError) as refused:
        handle_extract_request(extractor, *request({"dataset": "elsewhere"}))

    assert "dataset elsewhere: bigquery_source: BigQuery refused" in str(refused.value)
    assert reason in str(refused.value)
