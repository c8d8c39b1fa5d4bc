"""The run index against fake-gcs-server through the real storage client: the listing
``BucketLister`` sends (``prefix``, ``startOffset``, ``maxResults``, next pages by token)
and create-only entries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import google.cloud.storage as storage
import pytest
from google.auth.credentials import AnonymousCredentials

from cascade.core.paths import RunPaths
from cascade.core.run_index import BucketLister, RunIndex, entry_names, record_run_created
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.core.store import ArtifactStore
from tests.unit.gcs_front_process import running_gcs_front


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[storage.Client]:
    with running_gcs_front(tmp_path_factory.mktemp("gcs"), front=False) as url:
        yield storage.Client(
            project="cascade-test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": url},
        )


@pytest.fixture
def bucket(client: storage.Client) -> str:
    name = f"artifacts-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return name


def _record(number: int) -> RunRecord:
    name = f"credit/{number}.csv"
    created = datetime(2026, 11, 27, tzinfo=UTC) + timedelta(seconds=number)
    return RunRecord(
        run_id=run_id_for_object("credit", "landing", name, 1),
        dataset="credit",
        trigger=Trigger(kind="object", uri=f"gs://landing/{name}", generation=1),
        created_at=created,
        updated_at=created,
    )


def test_the_bucket_lister_pages_from_a_start_offset(client: storage.Client, bucket: str) -> None:
    blobs = client.bucket(bucket)
    for number in range(7):
        blobs.blob(f"index/runs/all/{number:03d}").upload_from_string(b"")
    blobs.blob("index/runs/allx/000").upload_from_string(b"")
    lister = BucketLister(client, bucket)

    everything = list(lister.list_from("index/runs/all/", None, 2))
    rest = list(lister.list_from("index/runs/all/", "index/runs/all/004", 2))

    assert everything == [f"index/runs/all/{number:03d}" for number in range(7)]
    assert rest == ["index/runs/all/004", "index/runs/all/005", "index/runs/all/006"]


def test_pages_and_create_only_entries_on_the_emulator(client: storage.Client, bucket: str) -> None:
    store = ArtifactStore(client, bucket)
    records = [_record(number) for number in range(5)]
    for record in records:
        store.create(RunPaths(record.run_id).record, record.model_dump_json().encode())
        record_run_created(store, record)
    first_generation = store.stat(entry_names(records[0])[0])
    record_run_created(store, records[0])
    index = RunIndex(store, BucketLister(client, bucket))

    first = index.page(size=3)
    second = index.page(size=3, token=first.next_token)

    assert [run.run_id for run in first.runs + second.runs] == [
        record.run_id for record in reversed(records)
    ]
    assert second.next_token is None
    assert first_generation is not None
    assert store.stat(entry_names(records[0])[0]) == first_generation


def test_the_index_is_written_only_under_its_prefix(client: storage.Client, bucket: str) -> None:
    store = ArtifactStore(client, bucket)

    record_run_created(store, _record(1))

    names = sorted(blob.name for blob in client.list_blobs(bucket))
    assert all(name.startswith(("index/runs/", "index/run-states/running/")) for name in names)
    assert len(names) == 4  # the run's two entries and its running state's two
