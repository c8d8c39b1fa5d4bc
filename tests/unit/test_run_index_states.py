"""The run index's state entries: a state filter is one listing of that state's
create-only entries, each run confirmed by its run.json; the dead-letter index."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.dead_letter_index import (
    DEAD_LETTER_INDEX_PREFIX,
    backfill_dead_letter_index,
    dead_letter_entry_name,
    index_dead_letter,
    record_of_entry,
)
from cascade.core.errors import BadRequestError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import RunPaths, dead_letter_record
from cascade.core.run_index import (
    STATE_INDEX_PREFIX,
    RunIndex,
    StoreLister,
    backfill_run_index,
    ensure_run_indexed,
    entry_names,
    record_run_created,
    record_run_state,
    state_entry_names,
)
from cascade.core.runs import RunRecord, Trigger, run_id_for_object, run_id_for_request
from cascade.core.store import StoredObject

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class CountingStore(MemoryArtifactStore):
    """The in-memory bucket, counting the reads of run records and the creates."""

    def __init__(self) -> None:
        super().__init__("artifacts")
        self.record_reads = 0
        self.creates: list[str] = []

    def read(
        self, name: str, *, generation: int | None = None, metadata: bool = False
    ) -> StoredObject | None:
        if name.endswith("/run.json"):
            self.record_reads += 1
        return super().read(name, generation=generation, metadata=metadata)

    def create(
        self, name: str, data: bytes, *, content_type: str = "application/json"
    ) -> int | None:
        self.creates.append(name)
        return super().create(name, data, content_type=content_type)


def _record(number: int, *, dataset: str = "credit", request: bool = False) -> RunRecord:
    if request:
        run_id = run_id_for_request(dataset, f"req-{number}")
        trigger = Trigger(kind="request", request_id=f"req-{number}")
    else:
        name = f"{dataset}/{number}.csv"
        run_id = run_id_for_object(dataset, "landing", name, number + 1)
        trigger = Trigger(kind="object", uri=f"gs://landing/{name}", generation=number + 1)
    created = T0 + timedelta(seconds=number)
    return RunRecord(
        run_id=run_id,
        dataset=dataset,
        trigger=trigger,
        created_at=created,
        updated_at=created,
    )


def _write(store: MemoryArtifactStore, record: RunRecord) -> None:
    """run.json as the ledger writes it: created once, rewritten at the end."""
    path = RunPaths(record.run_id).record
    if store.stat(path) is None:
        store.create(path, record.model_dump_json().encode())
    else:
        store.write(path, record.model_dump_json().encode())


def _start(store: MemoryArtifactStore, number: int, **options: object) -> RunRecord:
    record = _record(number, **options)  # type: ignore[arg-type]
    _write(store, record)
    ensure_run_indexed(store, record)
    return record


def _end(store: MemoryArtifactStore, record: RunRecord, state: str) -> RunRecord:
    """What the step that ends the run does: run.json's end, then its state's entries."""
    ended = record.model_copy(update={"state": state})
    _write(store, ended)
    record_run_state(store, ended)
    return ended


def _ids(index: RunIndex, **filters: object) -> list[str]:
    runs: list[str] = []
    token = None
    while True:
        page = index.page(size=3, token=token, **filters)  # type: ignore[arg-type]
        runs += [run.run_id for run in page.runs]
        token = page.next_token
        if token is None:
            return runs


def test_a_run_moves_from_running_to_its_end_state_in_the_filters() -> None:
    store = MemoryArtifactStore("artifacts")
    done, busy = _start(store, 1), _start(store, 2)
    done = _end(store, done, "failed")
    index = RunIndex(store, StoreLister(store))

    assert _ids(index, state="failed") == [done.run_id]
    assert _ids(index, state="running") == [busy.run_id]
    assert _ids(index, state="succeeded") == []
    assert _ids(index) == [busy.run_id, done.run_id]


def test_a_state_page_reads_only_its_own_runs_not_every_run() -> None:
    store = CountingStore()
    runs = [_start(store, number) for number in range(100)]
    failed = [_end(store, run, "failed") for run in runs[::20]]
    for run in runs:
        if run.run_id not in {f.run_id for f in failed}:
            _end(store, run, "succeeded")
    index = RunIndex(store, StoreLister(store))
    store.record_reads = 0

    page = index.page(size=25, state="failed")

    assert [run.run_id for run in page.runs] == [r.run_id for r in reversed(failed)]
    assert store.record_reads == len(failed)
    assert page.scanned == len(failed)
    assert page.next_token is None


def test_a_dataset_and_state_filter_lists_that_dataset_s_state_only() -> None:
    store = MemoryArtifactStore("artifacts")
    credit = _end(store, _start(store, 1), "rejected")
    _end(store, _start(store, 2, dataset="churn"), "rejected")
    _end(store, _start(store, 3), "succeeded")
    request = _end(store, _start(store, 4, request=True), "rejected")
    index = RunIndex(store, StoreLister(store))

    assert _ids(index, dataset="credit", state="rejected") == [request.run_id, credit.run_id]
    assert _ids(index, dataset="credit", state="rejected", trigger="request") == [request.run_id]
    assert _ids(index, dataset="credit", state="rejected", trigger="object") == [credit.run_id]


def test_entries_left_behind_by_a_state_change_are_never_shown() -> None:
    """A force-bless sends a rejected run back to running, then deploy ends it."""
    store = MemoryArtifactStore("artifacts")
    run = _end(store, _start(store, 1), "rejected")
    _write(store, run.model_copy(update={"state": "running"}))
    index = RunIndex(store, StoreLister(store))

    assert _ids(index, state="rejected") == []
    assert _ids(index, state="running") == [run.run_id]

    _end(store, run, "succeeded")

    assert _ids(index, state="running") == []
    assert _ids(index, state="rejected") == []
    assert _ids(index, state="succeeded") == [run.run_id]


def test_duplicate_deliveries_write_each_entry_once() -> None:
    store = CountingStore()
    run = _start(store, 1)
    ended = _end(store, run, "failed")
    before = {name: store.stat(name) for name in store.list_names("index/")}

    for _ in range(3):  # redeliveries of the first step and of the ending step
        assert ensure_run_indexed(store, run) is False
        assert ensure_run_indexed(store, ended) is False
        assert record_run_state(store, ended) is False
        record_run_created(store, run)

    assert {name: store.stat(name) for name in store.list_names("index/")} == before
    assert sorted(before) == sorted(
        [*entry_names(run), *state_entry_names(run), *state_entry_names(ended)]
    )
    index = RunIndex(store, StoreLister(store))
    assert _ids(index, state="failed") == [run.run_id]
    assert _ids(index) == [run.run_id]


def test_an_end_entry_written_before_the_start_s_heals_and_lists_once() -> None:
    """Out of order: the creating delivery died before its entries; the run ended (its
    end entry written); a late redelivery of the first step finds it ended."""
    store = MemoryArtifactStore("artifacts")
    run = _record(1)
    _write(store, run)
    ended = _end(store, run, "succeeded")
    index = RunIndex(store, StoreLister(store))

    assert _ids(index, state="succeeded") == [run.run_id]
    assert _ids(index) == []

    assert ensure_run_indexed(store, ended) is True

    assert _ids(index) == [run.run_id]
    assert _ids(index, state="succeeded") == [run.run_id]
    assert _ids(index, state="running") == []


def test_a_running_entry_written_after_the_end_is_skipped() -> None:
    """A slow duplicate of the first step writes ``running`` entries after the end."""
    store = MemoryArtifactStore("artifacts")
    run = _record(1)
    _write(store, run)
    _end(store, run, "failed")
    record_run_created(store, run)  # as run.json said when that delivery read it
    index = RunIndex(store, StoreLister(store))

    assert _ids(index, state="running") == []
    assert _ids(index, state="failed") == [run.run_id]


def test_a_crash_between_the_end_and_its_entry_heals_on_redelivery() -> None:
    store = MemoryArtifactStore("artifacts")
    run = _start(store, 1)
    ended = run.model_copy(update={"state": "failed"})
    _write(store, ended)  # run.json's end written; died before the entries
    index = RunIndex(store, StoreLister(store))
    assert _ids(index, state="failed") == []

    assert ensure_run_indexed(store, ended) is True  # the redelivery reads run.json

    assert _ids(index, state="failed") == [run.run_id]


def test_running_pages_stop_at_the_scan_limit_with_a_token_to_go_on() -> None:
    store = MemoryArtifactStore("artifacts")
    oldest = _start(store, 0)
    for number in range(1, 10):
        _end(store, _start(store, number), "succeeded")
    index = RunIndex(store, StoreLister(store), scan_limit=4)

    first = index.page(size=5, state="running")

    assert first.runs == []
    assert first.scanned == 4
    assert first.next_token is not None
    assert _ids(index, state="running") == [oldest.run_id]


def test_backfill_adds_state_entries_for_runs_indexed_before_them() -> None:
    store = MemoryArtifactStore("artifacts")
    runs = [_record(1), _record(2, dataset="churn"), _record(3)]
    states = ["failed", "rejected", "running"]
    for run, state in zip(runs, states, strict=True):
        stored = run.model_copy(update={"state": state})
        _write(store, stored)
        for name in entry_names(stored):  # what the index held before state entries
            store.create(name, b"{}")
    index = RunIndex(store, StoreLister(store))
    assert _ids(index, state="failed") == []

    assert backfill_run_index(store) == 3
    assert backfill_run_index(store) == 3
    entries = sorted(store.list_names(STATE_INDEX_PREFIX))

    assert _ids(index, state="failed") == [runs[0].run_id]
    assert _ids(index, state="rejected", dataset="churn") == [runs[1].run_id]
    assert _ids(index, state="running") == [runs[2].run_id]
    assert len(entries) == 6  # two per run: its recorded state's, nothing for the past


@pytest.mark.parametrize(
    "state", ["unknown", "../all", "running/../failed", "FAILED", "", "failed\x00"]
)
def test_a_state_outside_the_run_states_is_refused(state: str) -> None:
    store = MemoryArtifactStore("artifacts")

    with pytest.raises(BadRequestError, match="state"):
        RunIndex(store, StoreLister(store)).page(size=5, state=state)
    with pytest.raises(BadRequestError, match="state"):
        state_entry_names(_record(1), state)


def test_a_token_of_another_state_s_listing_is_refused() -> None:
    store = MemoryArtifactStore("artifacts")
    for number in range(5):
        _end(store, _start(store, number), "failed")
    index = RunIndex(store, StoreLister(store))
    token = index.page(size=2, state="failed").next_token
    assert token is not None

    for other in ({"state": "succeeded"}, {}, {"state": "failed", "dataset": "credit"}):
        with pytest.raises(BadRequestError, match="token"):
            index.page(size=2, token=token, **other)  # type: ignore[arg-type]


def test_foreign_objects_under_a_state_prefix_are_skipped() -> None:
    store = MemoryArtifactStore("artifacts")
    run = _end(store, _start(store, 1), "failed")
    store.create(f"{STATE_INDEX_PREFIX}failed/all/0000000000000000-../../etc", b"{}")
    store.create(f"{STATE_INDEX_PREFIX}failed/all/notakey-credit-0123456789abcdef", b"{}")

    assert _ids(RunIndex(store, StoreLister(store)), state="failed") == [run.run_id]


# ------------------------------------------------------------------ dead letters


def _letter(store: MemoryArtifactStore, message_id: str, minute: int) -> datetime:
    at = T0 + timedelta(minutes=minute)
    body = {"message_id": message_id, "recorded_at": at.isoformat(), "data": "{}"}
    store.create(dead_letter_record(message_id), json.dumps(body).encode())
    return at


def test_dead_letter_entries_list_newest_first_and_name_their_records() -> None:
    store = MemoryArtifactStore("artifacts")
    for number, minute in ((1, 5), (2, 1), (3, 9)):
        index_dead_letter(store, str(number), _letter(store, str(number), minute))

    names = list(store.list_names(DEAD_LETTER_INDEX_PREFIX))

    assert [record_of_entry(name) for name in names] == [
        "dead-letters/3.json",
        "dead-letters/1.json",
        "dead-letters/2.json",
    ]


def test_a_dead_letter_entry_is_written_once() -> None:
    store = MemoryArtifactStore("artifacts")
    at = _letter(store, "7", 1)

    assert index_dead_letter(store, "7", at) is True
    assert index_dead_letter(store, "7", at) is False
    assert len(list(store.list_names(DEAD_LETTER_INDEX_PREFIX))) == 1


def test_a_hostile_message_id_is_kept_under_its_hashed_name() -> None:
    hostile = "../../runs/x/run.json"
    name = dead_letter_entry_name(hostile, T0)

    assert record_of_entry(name) == dead_letter_record(hostile)
    assert ".." not in name


@pytest.mark.parametrize(
    "name",
    [
        f"{DEAD_LETTER_INDEX_PREFIX}0000000000000000-../../runs/x",
        f"{DEAD_LETTER_INDEX_PREFIX}0000000000000000-a/b",
        f"{DEAD_LETTER_INDEX_PREFIX}123-abc",
        f"{DEAD_LETTER_INDEX_PREFIX}0000000000000000-",
        "dead-letters/0000000000000000-abc",
        f"{DEAD_LETTER_INDEX_PREFIX}0000000000000000-a\nb",
    ],
)
def test_a_foreign_dead_letter_entry_names_no_record(name: str) -> None:
    assert record_of_entry(name) is None


def test_backfill_indexes_dead_letters_once_and_skips_what_it_cannot_read() -> None:
    store = MemoryArtifactStore("artifacts")
    _letter(store, "1", 1)
    _letter(store, "2", 2)
    store.create("dead-letters/broken.json", b"{not json")
    store.create("dead-letters/list.json", b"[]")
    store.create(  # a record whose message id would be kept elsewhere
        "dead-letters/moved.json",
        json.dumps({"message_id": "9", "recorded_at": T0.isoformat()}).encode(),
    )

    assert backfill_dead_letter_index(store) == 2
    assert backfill_dead_letter_index(store) == 2
    assert [record_of_entry(n) for n in store.list_names(DEAD_LETTER_INDEX_PREFIX)] == [
        "dead-letters/2.json",
        "dead-letters/1.json",
    ]


def test_the_run_backfill_indexes_dead_letters_too() -> None:
    store = MemoryArtifactStore("artifacts")
    _letter(store, "1", 1)

    backfill_run_index(store)

    assert len(list(store.list_names(DEAD_LETTER_INDEX_PREFIX))) == 1


def test_running_skips_runs_that_succeeded_or_failed_without_reading_them() -> None:
    store = CountingStore()
    runs = [_start(store, number) for number in range(30)]
    for number, run in enumerate(runs):
        if number % 10 == 1:
            _end(store, run, "rejected")  # may be revived by a force-bless: read
        elif number % 10 != 0:
            _end(store, run, "succeeded" if number % 2 else "failed")
    busy = [run.run_id for number, run in enumerate(runs) if number % 10 == 0]
    store.record_reads = 0

    page = RunIndex(store, StoreLister(store)).page(size=10, state="running")

    assert [run.run_id for run in page.runs] == list(reversed(busy))
    assert store.record_reads == 6  # the 3 running and the 3 rejected
    assert page.next_token is None
