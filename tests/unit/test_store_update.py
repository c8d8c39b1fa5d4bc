"""ArtifactStore.update, the one read-modify-write loop, and the store's read APIs.

Every test runs on both stores: the real ArtifactStore over an in-memory storage client,
and the MemoryArtifactStore fake.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import BaseModel, Field

from cascade.core.context import StepContext
from cascade.core.errors import ConcurrentUpdateError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore, Payload, StoredObject
from tests.unit.conftest import Clock, memory_step_context
from tests.unit.validation.fake_storage import FakeStorageClient

NAME = "datasets/credit/counter.json"


class Counter(BaseModel):
    count: int = 0
    by: list[str] = Field(default_factory=list)


StoreFactory = Callable[[str], ArtifactStore]


@pytest.fixture(params=["gcs-client", "memory"])
def stores(request: pytest.FixtureRequest) -> StoreFactory:
    """Opens stores on one shared bucket: a second store is a second, concurrent writer."""
    if request.param == "memory":
        shared = MemoryArtifactStore("bucket", update_attempts=5)
        return lambda _bucket: shared
    client = FakeStorageClient()
    return lambda bucket: ArtifactStore(client, bucket, update_attempts=5)  # type: ignore[arg-type]


@pytest.fixture
def store(stores: StoreFactory) -> ArtifactStore:
    return stores("bucket")


@pytest.fixture
def writes(store: ArtifactStore) -> list[str]:
    """The names ``store`` writes, from now on."""
    written: list[str] = []
    original = store.write

    def counting(name: str, data: bytes, **options):  # type: ignore[no-untyped-def]
        written.append(name)
        return original(name, data, **options)

    store.write = counting  # type: ignore[method-assign]
    return written


def _increment(by: str) -> Callable[[Counter | None], Counter]:
    def change(current: Counter | None) -> Counter:
        counter = Counter() if current is None else current
        counter.count += 1
        counter.by.append(by)
        return counter

    return change


def test_update_creates_an_absent_object(store: ArtifactStore, writes: list[str]) -> None:
    updated = store.update(NAME, Counter, _increment("a"))

    assert updated.written
    assert updated.value == Counter(count=1, by=["a"])
    stored = store.read_model(NAME, Counter)
    assert stored == (Counter(count=1, by=["a"]), updated.generation)
    assert writes == [NAME]


def test_update_applies_the_change_to_the_stored_value(store: ArtifactStore) -> None:
    first = store.update(NAME, Counter, _increment("a"))

    second = store.update(NAME, Counter, _increment("b"))

    assert second.value == Counter(count=2, by=["a", "b"])
    assert second.generation != first.generation
    assert store.read_model(NAME, Counter) == (second.value, second.generation)


def test_returning_none_keeps_the_object_and_writes_nothing(
    store: ArtifactStore, writes: list[str]
) -> None:
    created = store.update(NAME, Counter, _increment("a"))
    writes.clear()

    kept = store.update(NAME, Counter, lambda current: None)

    assert not kept.written
    assert kept.value == Counter(count=1, by=["a"])
    assert kept.generation == created.generation
    assert writes == []


def test_returning_none_for_an_absent_object_creates_nothing(
    store: ArtifactStore, writes: list[str]
) -> None:
    kept = store.update(NAME, Counter, lambda current: None)

    assert (kept.value, kept.generation, kept.written) == (None, 0, False)
    assert store.read(NAME) is None
    assert writes == []


def test_an_unchanged_value_is_not_written_again(store: ArtifactStore, writes: list[str]) -> None:
    created = store.update(NAME, Counter, _increment("a"))
    writes.clear()

    same = store.update(NAME, Counter, lambda current: current)

    assert not same.written
    assert same.value == created.value
    assert same.generation == created.generation
    assert writes == []


def test_a_lost_race_reruns_the_change_on_the_newer_value(stores: StoreFactory) -> None:
    store, rival = stores("bucket"), stores("bucket")
    store.update(NAME, Counter, _increment("a"))
    seen: list[Counter | None] = []

    def change_while_a_rival_writes(current: Counter | None) -> Counter:
        seen.append(None if current is None else current.model_copy(deep=True))
        if len(seen) == 1:
            rival.update(NAME, Counter, _increment("rival"))
        return _increment("b")(current)

    updated = store.update(NAME, Counter, change_while_a_rival_writes)

    assert updated.written
    assert seen == [Counter(count=1, by=["a"]), Counter(count=2, by=["a", "rival"])]
    assert updated.value == Counter(count=3, by=["a", "rival", "b"])
    assert store.read_model(NAME, Counter) == (updated.value, updated.generation)


def test_too_many_lost_races_raise_concurrent_update_error(stores: StoreFactory) -> None:
    store, rival = stores("bucket"), stores("bucket")
    calls: list[int] = []

    def always_outrun(current: Counter | None) -> Counter:
        calls.append(1)
        rival.update(NAME, Counter, _increment("rival"))
        return _increment("loser")(current)

    with pytest.raises(ConcurrentUpdateError, match=f"{NAME}: lost 3 update races"):
        store.update(NAME, Counter, always_outrun, max_attempts=3)
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(ConcurrentUpdateError, match="lost 5 update races"):
        store.update(NAME, Counter, always_outrun)  # the store's own bound
    assert len(calls) == 5
    stored = store.read_model(NAME, Counter)
    assert stored is not None
    assert "loser" not in stored[0].by


def test_an_error_in_the_change_propagates_and_writes_nothing(
    store: ArtifactStore, writes: list[str]
) -> None:
    def refuse(current: Counter | None) -> Counter:
        raise KeyError("no such record")

    with pytest.raises(KeyError, match="no such record"):
        store.update(NAME, Counter, refuse)
    assert writes == []


class TaggedText:
    """A codec keeping text in the bytes and a tag in the object's metadata."""

    reads_metadata = True

    def decode(self, stored: StoredObject) -> tuple[str, str]:
        return stored.data.decode(), stored.metadata.get("tag", "")

    def encode(self, value: tuple[str, str]) -> Payload:
        text, tag = value
        return Payload(text.encode(), "text/plain", {"tag": tag})


def test_update_with_a_codec_keeps_metadata(store: ArtifactStore, writes: list[str]) -> None:
    store.update(NAME, TaggedText(), lambda current: ("hello", "v1"))

    updated = store.update(
        NAME, TaggedText(), lambda current: None if current is None else (current[0], "v2")
    )

    assert updated.value == ("hello", "v2")
    stored = store.read(NAME, metadata=True)
    assert stored is not None
    assert (stored.data, dict(stored.metadata)) == (b"hello", {"tag": "v2"})
    writes.clear()
    same = store.update(NAME, TaggedText(), lambda current: current)
    assert not same.written
    assert writes == []


def test_pinned_reads_stat_stream_and_copy(stores: StoreFactory) -> None:
    landing, artifacts = stores("landing"), stores("artifacts")
    old = landing.write("credit/day-1.csv", b"a,b\n1,2\n")
    new = landing.write("credit/day-1.csv", b"a,b\n3,4\n5,6\n", metadata={"k": "v"})
    assert old is not None
    assert new is not None

    info = landing.stat("credit/day-1.csv", generation=new)
    assert info is not None
    assert (info.generation, info.size, dict(info.metadata)) == (new, 12, {"k": "v"})
    assert landing.stat("credit/day-1.csv", generation=old) is None
    assert landing.read("credit/day-1.csv", generation=old) is None
    with landing.open_read("credit/day-1.csv", generation=new) as stream:
        assert stream.read() == b"a,b\n3,4\n5,6\n"

    assert landing.copy("credit/day-1.csv", artifacts, "q/day-1.csv", generation=old) is None
    copied = landing.copy("credit/day-1.csv", artifacts, "q/day-1.csv", generation=new)
    assert copied is not None
    stored = artifacts.read("q/day-1.csv")
    assert stored is not None
    assert (stored.data, stored.generation) == (b"a,b\n3,4\n5,6\n", copied)


def test_step_context_hands_out_stores_by_bucket(clock: Clock) -> None:
    ctx = memory_step_context(clock, Settings(landing_bucket="cascade-landing"))
    with pytest.raises(LookupError, match="cascade-landing"):
        ctx.landing_store()
    opened: list[str] = []

    def open_store(bucket: str) -> ArtifactStore:
        opened.append(bucket)
        return MemoryArtifactStore(bucket)

    ctx = StepContext(
        settings=ctx.settings,
        artifacts=ctx.artifacts,
        ledger=ctx.ledger,
        claims=ctx.claims,
        bus=ctx.bus,
        clock=clock,
        open_store=open_store,
    )

    assert ctx.store(ctx.artifacts.bucket_name) is ctx.artifacts
    landing = ctx.store("cascade-landing")
    assert landing is ctx.landing_store()
    assert landing.bucket_name == "cascade-landing"
    assert ctx.store("elsewhere").bucket_name == "elsewhere"
    assert opened == ["cascade-landing", "elsewhere"]
