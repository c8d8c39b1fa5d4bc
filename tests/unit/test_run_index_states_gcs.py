"""The run index's state entries and the dead-letter index against fake-gcs-server
through the real storage client: create-only on the emulator (a repeat is refused, the
generation kept), a state's pages by ``BucketLister``, dead letters newest first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

import google.cloud.storage as storage
import pytest
from google.auth.credentials import AnonymousCredentials

from cascade.core.dead_letter_index import (
    DEAD_LETTER_INDEX_PREFIX,
    index_dead_letter,
    record_of_entry,
)
from cascade.core.paths import RunPaths, dead_letter_record
from cascade.core.run_index import (
    BucketLister,
    RunIndex,
    ensure_run_indexed,
    record_run_state,
    state_entry_names,
)
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.core.store import ArtifactStore
from tests.unit.gcs_front_process import running_gcs_front

T0 = datetime(2026, 11, 27, tzinfo=UTC)


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


def _record(number: int, dataset: str = "credit") -> RunRecord:
    name = f"{dataset}/{number}.csv"
    created = T0 + timedelta(seconds=number)
    return RunRecord(
        run_id=run_id_for_object(dataset, "landing", name, 1),
        dataset=dataset,
        trigger=Trigger(kind="object", uri=f"gs://landing/{name}", generation=1),
        created_at=created,
        updated_at=created,
    )


def test_state_pages_on_the_emulator(client: storage.Client, bucket: str) -> None:
    store = ArtifactStore(client, bucket)
    failed: list[str] = []
    for number in range(7):
        record = _record(number, "credit" if number % 2 else "churn")
        store.create(RunPaths(record.run_id).record, record.model_dump_json().encode())
        ensure_run_indexed(store, record)
        ended = record.model_copy(update={"state": "failed" if number < 5 else "succeeded"})
        store.write(RunPaths(record.run_id).record, ended.model_dump_json().encode())
        record_run_state(store, ended)
        if ended.state == "failed":
            failed.insert(0, ended.run_id)
    index = RunIndex(store, BucketLister(client, bucket))

    first = index.page(size=2, state="failed")
    second = index.page(size=2, state="failed", token=first.next_token)
    third = index.page(size=2, state="failed", token=second.next_token)
    credit = index.page(size=5, state="failed", dataset="credit")

    assert [run.run_id for run in first.runs + second.runs + third.runs] == failed
    assert third.next_token is None
    assert first.scanned == 2
    assert [run.dataset for run in credit.runs] == ["credit", "credit"]
    assert index.page(size=5, state="running").runs == []


def test_state_entries_are_create_only_on_the_emulator(client: storage.Client, bucket: str) -> None:
    store = ArtifactStore(client, bucket)
    ended = _record(1).model_copy(update={"state": "rejected"})
    assert record_run_state(store, ended) is True
    generations = [store.stat(name) for name in state_entry_names(ended)]

    assert record_run_state(store, ended) is False

    assert [store.stat(name) for name in state_entry_names(ended)] == generations
    assert all(info is not None for info in generations)


def test_dead_letters_list_newest_first_on_the_emulator(
    client: storage.Client, bucket: str
) -> None:
    store = ArtifactStore(client, bucket)
    for message_id, minute in (("101", 3), ("102", 1), ("103", 2)):
        assert index_dead_letter(store, message_id, T0 + timedelta(minutes=minute))
    assert not index_dead_letter(store, "101", T0 + timedelta(minutes=3))
    lister = BucketLister(client, bucket)

    names = list(islice(lister.list_from(DEAD_LETTER_INDEX_PREFIX, None, 2), 10))

    assert [record_of_entry(name) for name in names] == [
        dead_letter_record("101"),
        dead_letter_record("103"),
        dead_letter_record("102"),
    ]
