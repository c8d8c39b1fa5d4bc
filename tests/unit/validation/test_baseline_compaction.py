"""The baseline without a hot object: per-file statistics, compactions, HEAD.

Each accepted file's statistics are recorded once under the file's own name; a
compaction merges them into a new object and moves HEAD; ``load`` reads the compaction
plus what HEAD does not cover. These tests race merges, compactions and reads against
each other (in memory, then through the real storage client against fake-gcs-server
behind the local twin of Cloud Storage's same-object write limit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import google.cloud.storage as storage
import pytest
from google.auth.credentials import AnonymousCredentials

from cascade.core.errors import ConcurrentUpdateError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore, ObjectInfo
from cascade.core.validation_config import ValidationConfig
from cascade.report.distributions import baseline_before
from cascade.validation.baseline_store import (
    COMPACTION_INTERVAL_S,
    LEGACY_FILES_KEY,
    LEGACY_RECENT_KEY,
    BaselineHead,
    BaselineStore,
)
from cascade.validation.schema import infer_schema
from cascade.validation.schema_store import _baseline_summary
from cascade.validation.statistics import statistics_proto
from tests.unit.gcs_front_process import running_gcs_front
from tests.unit.validation.builders import summary_of

DATASET = "credit"
CONFIG = ValidationConfig()
SCHEMA = infer_schema(summary_of({"x": [1.0, 2.0]}), CONFIG)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self) -> None:
        self.now += COMPACTION_INTERVAL_S + 0.1


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def artifacts() -> MemoryArtifactStore:
    return MemoryArtifactStore("cascade-artifacts")


def _store(artifacts: ArtifactStore, clock: Callable[[], float]) -> BaselineStore:
    return BaselineStore(artifacts, DATASET, clock=clock)


def _merge(store: BaselineStore, file_id: str, values: list[float]) -> bool:
    return store.merge_file(file_id, summary_of({"x": values}), CONFIG, schema=SCHEMA)


def _compact(store: BaselineStore, accepted: Callable[[str], bool] = lambda _id: True) -> Any:
    return store.compact(CONFIG, schema=SCHEMA, is_accepted=accepted)


def _count(store: BaselineStore) -> tuple[int, int]:
    """(files, examples) of the baseline as validation reads it."""
    loaded = store.load(SCHEMA, CONFIG)
    assert loaded is not None
    return loaded.files, loaded.summary.num_examples


def _names(artifacts: MemoryArtifactStore, part: str) -> list[str]:
    return sorted(name for name in artifacts.objects if f"/baseline/{part}" in name)


def test_no_baseline_before_the_first_file(artifacts: MemoryArtifactStore, clock: _Clock) -> None:
    assert _store(artifacts, clock).load() is None
    assert _compact(_store(artifacts, clock)).merged == ()


def test_each_file_is_its_own_object_and_reads_merge_them(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    store = _store(artifacts, clock)
    for index in range(5):
        assert _merge(store, f"file-{index}", [float(index + 1)] * (index + 1))

    assert _count(store) == (5, 15)
    assert len(_names(artifacts, "files/")) == 5
    assert _names(artifacts, "HEAD") == []  # nothing rewritten per file


def test_a_resumed_merge_counts_once_before_and_after_compaction(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    store = _store(artifacts, clock)
    assert _merge(store, "file-1", [1.0, 2.0])
    assert not _merge(store, "file-1", [1.0, 2.0])  # the step resumed before compaction
    assert _count(store) == (1, 2)
    _compact(store, accepted=lambda _id: False)  # compacted; its manifest not written yet

    assert not _merge(store, "file-1", [1.0, 2.0])  # resumed after: still covered

    assert _count(store) == (1, 2)
    assert _names(artifacts, "files/") == ["datasets/credit/baseline/files/file-1.pb"]


def test_covered_objects_are_deleted_only_once_their_manifest_exists(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    """A compaction deletes what the previous one covered (written more than a second
    before), and only the objects of files whose manifest exists."""
    store = _store(artifacts, clock)
    accepted: set[str] = set()
    for file_id in ("a", "b", "c"):
        _merge(store, file_id, [1.0])
    accepted.add("a")

    first = _compact(store, accepted=accepted.__contains__)

    assert first.merged == ("a", "b", "c")
    assert first.deleted == ()  # just merged: deleted by the next compaction
    assert _count(store) == (3, 3)  # covered, not counted twice
    _merge(store, "d", [1.0])
    clock.advance()

    second = _compact(store, accepted=accepted.__contains__)

    assert second.merged == ("d",)
    assert second.deleted == ("a",)  # b and c: their steps have not written a manifest
    assert _names(artifacts, "files/") == [
        "datasets/credit/baseline/files/b.pb",
        "datasets/credit/baseline/files/c.pb",
        "datasets/credit/baseline/files/d.pb",
    ]
    assert _count(store) == (4, 4)
    accepted.update({"b", "c", "d"})
    clock.advance()

    third = _compact(store, accepted=accepted.__contains__)  # nothing new: deletes only

    assert third.merged == ()
    assert set(third.deleted) == {"b", "c", "d"}
    assert _names(artifacts, "files/") == []
    assert _count(store) == (4, 4)


def test_a_compaction_waits_for_heads_interval(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    store = _store(artifacts, clock)
    _merge(store, "a", [1.0])
    assert _compact(store).merged == ("a",)
    head = artifacts.read(store.head_name)
    _merge(store, "b", [1.0])

    assert _compact(store).merged == ()  # HEAD written less than the interval ago

    assert artifacts.read(store.head_name) == head
    assert _count(store) == (2, 2)  # b is read as pending meanwhile
    clock.advance()
    assert _compact(store).merged == ("b",)


def test_each_compaction_is_a_new_object_and_old_ones_go(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    store = _store(artifacts, clock)
    seen = set()
    for index in range(4):
        _merge(store, f"f{index}", [1.0])
        result = _compact(store)
        assert result.head is not None
        seen.add(result.head.compaction)
        clock.advance()

    assert len(seen) == 4  # never overwritten
    assert all(name in seen for name in _names(artifacts, "compactions/"))
    assert len(_names(artifacts, "compactions/")) == 2  # the current one and the previous
    assert _count(store) == (4, 4)


def test_two_compactors_from_one_head_merge_each_file_once(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    store, rival = _store(artifacts, clock), _store(artifacts, clock)
    for file_id in ("a", "b"):
        _merge(store, file_id, [1.0, 1.0])
    original_write = artifacts.write
    raced: list[Any] = []

    def rival_writes_head_first(name: str, data: bytes, **options: Any) -> int | None:
        if name == store.head_name and not raced:
            raced.append(None)  # the rival's own writes go straight through
            raced[0] = _compact(rival)
        return original_write(name, data, **options)

    artifacts.write = rival_writes_head_first  # type: ignore[method-assign]
    ours = _compact(store)
    artifacts.write = original_write  # type: ignore[method-assign]

    assert raced[0].merged == ("a", "b")
    assert ours.merged == ()  # lost the race for HEAD: nothing merged twice
    assert _count(store) == (2, 4)
    orphan = [
        name for name in _names(artifacts, "compactions/") if name != raced[0].head.compaction
    ]
    assert len(orphan) == 1  # the loser's object, nobody's
    for file_id in ("c", "d"):  # two more compactions: the orphan is swept
        clock.advance()
        _merge(store, file_id, [1.0])
        _compact(store)
    assert orphan[0] not in artifacts.objects
    assert len(_names(artifacts, "compactions/")) == 2
    assert _count(store) == (4, 6)


def test_a_read_across_a_compaction_reads_again(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    """HEAD moves (and a file pending at the read of HEAD is compacted and deleted)
    between a read of HEAD and the listing: the read notices and starts over instead of
    missing the file."""
    store = _store(artifacts, clock)
    for file_id in ("a", "b"):
        _merge(store, file_id, [1.0])
    _compact(store)
    _merge(store, "c", [1.0])
    clock.advance()
    original_list = artifacts.list_objects
    moved: list[Any] = []

    def compact_before_listing(prefix: str, **options: Any) -> Iterator[ObjectInfo]:
        if not moved:  # two compactions: c merged, then its object deleted
            moved.append(None)
            moved[0] = _compact(_store(artifacts, clock))
            clock.advance()
            moved.append(_compact(_store(artifacts, clock)))
        return original_list(prefix, **options)

    artifacts.list_objects = compact_before_listing  # type: ignore[method-assign]
    counted = _count(store)
    artifacts.list_objects = original_list  # type: ignore[method-assign]

    assert moved[0].merged == ("c",)
    assert moved[1].deleted == ("c",)
    assert counted == (3, 3)


def test_a_read_gives_up_when_head_never_settles(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    store = _store(artifacts, clock)
    _merge(store, "a", [1.0])
    original_list = artifacts.list_objects
    counter = iter(range(1_000))
    inside = threading.local()

    def always_compacting(prefix: str, **options: Any) -> Iterator[ObjectInfo]:
        if not getattr(inside, "compacting", False):
            inside.compacting = True
            clock.advance()
            _merge(store, f"n{next(counter)}", [1.0])
            _compact(_store(artifacts, clock))
            inside.compacting = False
        return original_list(prefix, **options)

    artifacts.list_objects = always_compacting  # type: ignore[method-assign]
    with pytest.raises(ConcurrentUpdateError, match="HEAD kept moving"):
        store.load()


def test_an_old_layout_baseline_is_the_initial_compaction(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    legacy = statistics_proto(summary_of({"x": [1.0] * 10}), CONFIG, name="baseline")
    artifacts.write(
        DatasetPaths(DATASET).baseline_stats,
        legacy.SerializeToString(),
        metadata={LEGACY_FILES_KEY: "4", LEGACY_RECENT_KEY: "old-3 old-4"},
    )
    store = _store(artifacts, clock)

    assert _count(store) == (4, 10)
    assert not _merge(store, "old-4", [1.0])  # merged by the old code: a resumed step
    assert _merge(store, "new-1", [2.0, 2.0])
    assert _count(store) == (5, 12)
    first = _compact(store)
    assert first.head is not None
    assert first.head.previous == DatasetPaths(DATASET).baseline_stats
    assert not _merge(store, "old-3", [1.0])  # still known after the first compaction
    assert _count(store) == (5, 12)
    _merge(store, "new-2", [3.0])
    clock.advance()
    _compact(store)

    assert DatasetPaths(DATASET).baseline_stats not in artifacts.objects  # covered: gone
    assert _count(store) == (6, 13)


def test_a_compaction_and_a_read_keep_only_the_schemas_columns(
    artifacts: MemoryArtifactStore, clock: _Clock
) -> None:
    store = _store(artifacts, clock)
    wide = summary_of({"x": [1.0], "extra": [2.0]})
    store.merge_file("a", wide, CONFIG, schema=infer_schema(wide, CONFIG))

    loaded = store.load(SCHEMA, CONFIG)
    assert loaded is not None
    assert set(loaded.summary.features) == {"x"}
    assert set(_loaded(store).summary.features) == {"x", "extra"}  # no schema given
    _compact(store)
    assert set(_loaded(store).summary.features) == {"x"}


def test_concurrent_merges_and_compactions_count_every_file_once(
    artifacts: MemoryArtifactStore,
) -> None:
    """Threads accept files and compact as the validate step does, on the real clock."""
    files = 60
    errors: list[BaseException] = []

    def accept(index: int) -> None:
        try:
            store = BaselineStore(artifacts, DATASET)
            _merge(store, f"file-{index:03d}", [float(index + 1)])
            store.load(SCHEMA, CONFIG)
            _compact(store)
        except BaseException as error:
            errors.append(error)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(accept, range(files)))

    assert errors == []
    assert _count(BaselineStore(artifacts, DATASET)) == (files, files)


def _loaded(store: BaselineStore) -> Any:
    loaded = store.load()
    assert loaded is not None
    return loaded


# -- through the real storage client, with the same-object write limit ------------------


@pytest.fixture(scope="module")
def limited_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactStore]:
    root: Path = tmp_path_factory.mktemp("baseline-gcs")
    with running_gcs_front(root) as url, pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        client.create_bucket("cascade-artifacts")
        yield ArtifactStore(client, "cascade-artifacts")


def test_many_files_a_second_under_the_write_limit_all_count_once(
    limited_artifacts: ArtifactStore,
) -> None:
    """Files recorded and compacted from several threads as fast as they go, through
    the local twin of the 1 write/s limit: no error, each file counted once, and no
    object of the baseline written twice within a second (HEAD gives way)."""
    files = 40
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def accept(worker: int) -> None:
        start.wait(30)
        for index in range(worker, files, 8):
            try:
                store = BaselineStore(limited_artifacts, DATASET)
                assert _merge(store, f"file-{index:03d}", [float(index + 1)])
                store.load(SCHEMA, CONFIG)
                _compact(store)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=accept, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    store = BaselineStore(limited_artifacts, DATASET)
    assert _count(store) == (files, files)
    head = limited_artifacts.read(store.head_name)
    assert head is not None
    assert BaselineHead.model_validate_json(head.data).files >= 1


def test_the_report_and_the_schema_commands_read_the_compacted_baseline() -> None:
    """Readers besides validate and transform (the run report's fallback baseline, and
    ``schema accept-feature``'s statistics of a feature) see the per-file layout, not
    the single object older datasets had."""
    store = MemoryArtifactStore("arts")
    BaselineStore(store, DATASET).merge_file(
        "credit-f1", summary_of({"x": [1.0, 2.0, 3.0]}), CONFIG, schema=SCHEMA
    )

    used = baseline_before(store, DATASET, "credit-run", datetime(2026, 12, 1, tzinfo=UTC), CONFIG)
    read = _baseline_summary(store, DATASET)

    assert used.summary is not None
    assert used.summary.num_examples == 3
    assert read is not None
    assert read.num_examples == 3
