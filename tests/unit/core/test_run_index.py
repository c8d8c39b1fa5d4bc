"""The run index: create-only entries that list newest first, a page per listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.errors import BadRequestError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import RunPaths
from cascade.core.run_index import (
    INDEX_PREFIX,
    RunIndex,
    StoreLister,
    backfill_run_index,
    ensure_run_indexed,
    entry_names,
    record_run_created,
    record_run_state,
    trigger_kind_of,
)
from cascade.core.runs import RunRecord, Trigger, run_id_for_object, run_id_for_request

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _record(
    dataset: str, number: int, *, request: bool = False, state: str = "running"
) -> RunRecord:
    if request:
        run_id = run_id_for_request(dataset, f"req-{number}")
        trigger = Trigger(kind="request", request_id=f"req-{number}")
    else:
        uri = f"gs://landing/{dataset}/{number}.csv"
        run_id = run_id_for_object(dataset, "landing", f"{dataset}/{number}.csv", number + 1)
        trigger = Trigger(kind="object", uri=uri, generation=number + 1)
    created = T0 + timedelta(seconds=number)
    return RunRecord.model_validate(
        {
            "run_id": run_id,
            "dataset": dataset,
            "trigger": trigger,
            "state": state,
            "created_at": created,
            "updated_at": created,
        }
    )


def _store_runs(
    store: MemoryArtifactStore, records: list[RunRecord], *, index: bool = True
) -> None:
    for record in records:
        store.create(RunPaths(record.run_id).record, record.model_dump_json().encode())
        if index:
            record_run_created(store, record)


def _all_pages(index: RunIndex, **filters: object) -> list[list[str]]:
    pages: list[list[str]] = []
    token = None
    while True:
        page = index.page(size=3, token=token, **filters)  # type: ignore[arg-type]
        pages.append([run.run_id for run in page.runs])
        token = page.next_token
        if token is None:
            return pages


def test_entries_list_newest_first_across_datasets() -> None:
    store = MemoryArtifactStore("artifacts")
    records = [_record("credit", 1), _record("churn", 2), _record("credit", 3)]
    _store_runs(store, [records[1], records[0], records[2]])

    page = RunIndex(store, StoreLister(store)).page(size=10)

    assert [run.run_id for run in page.runs] == [r.run_id for r in reversed(records)]
    assert page.next_token is None
    assert page.runs[0].record == records[2]


def test_pages_cover_every_run_once_in_order() -> None:
    store = MemoryArtifactStore("artifacts")
    records = [_record("credit", number) for number in range(8)]
    _store_runs(store, records)

    pages = _all_pages(RunIndex(store, StoreLister(store)))

    assert [len(page) for page in pages] == [3, 3, 2]
    assert [run for page in pages for run in page] == [r.run_id for r in reversed(records)]


def test_a_dataset_lists_only_its_runs() -> None:
    store = MemoryArtifactStore("artifacts")
    _store_runs(store, [_record("credit", 1), _record("churn", 2), _record("credit", 3)])

    page = RunIndex(store, StoreLister(store)).page(size=10, dataset="credit")

    assert [run.dataset for run in page.runs] == ["credit", "credit"]


def test_filters_by_trigger_kind_and_state() -> None:
    store = MemoryArtifactStore("artifacts")
    records = [
        _record("credit", 1),
        _record("credit", 2, request=True, state="failed"),
        _record("credit", 3, state="failed"),
        _record("credit", 4, request=True),
    ]
    _store_runs(store, records)
    index = RunIndex(store, StoreLister(store))

    requests = index.page(size=10, trigger="request")
    failed = index.page(size=10, state="failed")
    failed_requests = index.page(size=10, state="failed", trigger="request")

    assert [r.run_id for r in requests.runs] == [records[3].run_id, records[1].run_id]
    assert [r.run_id for r in failed.runs] == [records[2].run_id, records[1].run_id]
    assert [r.run_id for r in failed_requests.runs] == [records[1].run_id]
    assert trigger_kind_of(records[1].run_id) == "request"
    assert trigger_kind_of(records[0].run_id) == "object"


def test_a_state_filter_stops_after_its_scan_limit_with_a_token_to_go_on() -> None:
    store = MemoryArtifactStore("artifacts")
    records = [_record("credit", 0)]  # still running
    records += [_record("credit", number, state="succeeded") for number in range(1, 10)]
    for record in records:  # created running, then ended: their running entries stay
        store.create(RunPaths(record.run_id).record, record.model_dump_json().encode())
        record_run_created(store, record.model_copy(update={"state": "running"}))
        record_run_state(store, record)
    index = RunIndex(store, StoreLister(store), scan_limit=4)

    first = index.page(size=5, state="running")
    rest = _all_pages(index, state="running")

    assert first.runs == []
    assert first.scanned == 4
    assert first.next_token is not None
    assert [run for page in rest for run in page] == [records[0].run_id]


def test_entries_are_create_only_and_a_second_call_changes_nothing() -> None:
    store = MemoryArtifactStore("artifacts")
    record = _record("credit", 1)
    record_run_created(store, record)
    generations = {name: store.stat(name).generation for name in entry_names(record)}  # type: ignore[union-attr]

    changed = record.model_copy(update={"state": "failed"})
    record_run_created(store, changed)

    assert {name: store.stat(name).generation for name in entry_names(record)} == generations  # type: ignore[union-attr]
    assert len(list(store.list_names(INDEX_PREFIX))) == 2


def test_entry_names_sort_by_inverted_creation_time() -> None:
    older, newer = _record("credit", 1), _record("credit", 2)

    assert entry_names(newer)[0] < entry_names(older)[0]
    assert entry_names(newer)[1].startswith(f"{INDEX_PREFIX}datasets/credit/")
    assert entry_names(newer)[0].startswith(f"{INDEX_PREFIX}all/")


@pytest.mark.parametrize(
    "run_id",
    ["../credit-0123456789abcdef", "credit/x-0123456789abcdef", "CREDIT-0123456789abcdef", ""],
)
def test_a_run_id_the_system_would_not_derive_is_refused(run_id: str) -> None:
    record = _record("credit", 1).model_copy(update={"run_id": run_id})

    with pytest.raises(BadRequestError):
        record_run_created(MemoryArtifactStore("artifacts"), record)


@pytest.mark.parametrize("dataset", ["../etc", "a/b", "ALL", "", "x" * 64, "<script>"])
def test_a_hostile_dataset_filter_is_refused(dataset: str) -> None:
    store = MemoryArtifactStore("artifacts")

    with pytest.raises(BadRequestError, match="dataset"):
        RunIndex(store, StoreLister(store)).page(size=5, dataset=dataset)


@pytest.mark.parametrize(
    "token", ["%%%", "bm90LWluZGV4", "a" * 500, "aW5kZXgvcnVucy9kYXRhc2V0cy9jaHVybi8"]
)
def test_a_forged_page_token_is_refused(token: str) -> None:
    store = MemoryArtifactStore("artifacts")

    with pytest.raises(BadRequestError, match="token"):
        RunIndex(store, StoreLister(store)).page(size=5, dataset="credit", token=token)


def test_foreign_objects_under_the_index_prefix_are_skipped() -> None:
    store = MemoryArtifactStore("artifacts")
    record = _record("credit", 1)
    _store_runs(store, [record])
    store.create(f"{INDEX_PREFIX}all/0000000000000000-../../etc", b"{}")
    store.create(f"{INDEX_PREFIX}all/not-a-sort-key-credit-0123456789abcdef", b"{}")

    page = RunIndex(store, StoreLister(store)).page(size=10)

    assert [run.run_id for run in page.runs] == [record.run_id]


def test_an_indexed_run_without_a_record_is_listed_without_one() -> None:
    store = MemoryArtifactStore("artifacts")
    record = _record("credit", 1)
    record_run_created(store, record)

    page = RunIndex(store, StoreLister(store)).page(size=10)

    assert [(run.run_id, run.record) for run in page.runs] == [(record.run_id, None)]


def test_backfill_indexes_runs_made_before_the_index_once() -> None:
    store = MemoryArtifactStore("artifacts")
    records = [_record("credit", 1), _record("churn", 2, request=True)]
    _store_runs(store, records, index=False)
    store.create(f"runs/{records[0].run_id}/validation/run.json", b"not a record")

    indexed = backfill_run_index(store)
    again = backfill_run_index(store)
    page = RunIndex(store, StoreLister(store)).page(size=10)

    assert (indexed, again) == (2, 2)
    assert [run.run_id for run in page.runs] == [records[1].run_id, records[0].run_id]
    assert len(list(store.list_names(INDEX_PREFIX))) == 4


@pytest.mark.parametrize("size", [0, -1, 201])
def test_page_size_is_bounded(size: int) -> None:
    store = MemoryArtifactStore("artifacts")

    with pytest.raises(BadRequestError, match="page size"):
        RunIndex(store, StoreLister(store)).page(size=size)


def test_filtered_pages_cover_every_matching_run_once_in_order() -> None:
    store = MemoryArtifactStore("artifacts")
    records = [
        _record(
            "credit", number, request=number % 3 == 0, state="failed" if number % 2 else "running"
        )
        for number in range(20)
    ]
    _store_runs(store, records)
    index = RunIndex(store, StoreLister(store))
    newest_first = list(reversed(records))

    requests = _all_pages(index, trigger="request")
    failed_requests = _all_pages(index, trigger="request", state="failed")

    assert [run for page in requests for run in page] == [
        r.run_id for r in newest_first if r.trigger.kind == "request"
    ]
    assert [run for page in failed_requests for run in page] == [
        r.run_id for r in newest_first if r.trigger.kind == "request" and r.state == "failed"
    ]
    assert all(len(page) == 3 for page in requests[:-1])


def test_ensure_run_indexed_heals_a_run_whose_entries_were_never_written() -> None:
    store = MemoryArtifactStore("artifacts")
    record = _record("credit", 1)
    _store_runs(store, [record], index=False)
    all_entry, dataset_entry = entry_names(record)
    store.create(all_entry, b"{}")  # died between the two entries

    healed = ensure_run_indexed(store, record)
    again = ensure_run_indexed(store, record)

    assert (healed, again) == (True, False)
    assert store.stat(dataset_entry) is not None
    page = RunIndex(store, StoreLister(store)).page(size=5, dataset="credit")
    assert [run.run_id for run in page.runs] == [record.run_id]
