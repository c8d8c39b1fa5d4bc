"""The precomputed store's in-process cache: the head from memory, never another
version's answer, a rewrite or a late load seen within the TTL, bounded size."""

from __future__ import annotations

import pytest

from cascade.serving.precomputed import CachedStore, MemoryPrecomputedStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def inner() -> MemoryPrecomputedStore:
    store = MemoryPrecomputedStore()
    store.write("credit", "1", [("a", {"p": 0.1}), ("b", {"p": 0.2})])
    store.write("credit", "2", [("a", {"p": 0.9})])
    store.reads.clear()
    return store


def test_a_repeated_key_is_read_from_the_store_once(inner: MemoryPrecomputedStore) -> None:
    cached = CachedStore(inner, max_entries=10, ttl_s=30, clock=Clock())
    for _ in range(3):
        assert cached.read("credit", "1", ["a", "b"]) == {"a": {"p": 0.1}, "b": {"p": 0.2}}
    assert inner.reads == [("credit", "1", ("a", "b"))]


def test_each_version_has_its_own_answers(inner: MemoryPrecomputedStore) -> None:
    cached = CachedStore(inner, max_entries=10, ttl_s=30, clock=Clock())
    assert cached.read("credit", "1", ["a"]) == {"a": {"p": 0.1}}
    assert cached.read("credit", "2", ["a", "b"]) == {"a": {"p": 0.9}}
    assert cached.read("credit", "3", ["a"]) == {}


def test_a_miss_is_remembered_for_its_own_short_ttl_then_a_late_load_is_seen(
    inner: MemoryPrecomputedStore,
) -> None:
    clock = Clock()
    cached = CachedStore(inner, max_entries=10, ttl_s=30, miss_ttl_s=2, clock=clock)
    assert cached.read("credit", "2", ["b"]) == {}
    inner.write("credit", "2", [("b", {"p": 0.5})])  # a batch loads it (not through us)
    clock.now += 1.5
    assert cached.read("credit", "2", ["b"]) == {}
    clock.now += 1
    assert cached.read("credit", "2", ["b"]) == {"b": {"p": 0.5}}


def test_an_answer_is_trusted_for_the_longer_ttl(inner: MemoryPrecomputedStore) -> None:
    clock = Clock()
    cached = CachedStore(inner, max_entries=10, ttl_s=30, miss_ttl_s=2, clock=clock)
    assert cached.read("credit", "1", ["a"]) == {"a": {"p": 0.1}}
    inner.write("credit", "1", [("a", {"p": 0.7})])  # rewritten by a new batch
    clock.now += 29
    assert cached.read("credit", "1", ["a"]) == {"a": {"p": 0.1}}
    clock.now += 2
    assert cached.read("credit", "1", ["a"]) == {"a": {"p": 0.7}}


def test_writes_and_drops_through_the_cache_are_seen_at_once(
    inner: MemoryPrecomputedStore,
) -> None:
    cached = CachedStore(inner, max_entries=10, ttl_s=30, clock=Clock())
    assert cached.read("credit", "1", ["a"]) == {"a": {"p": 0.1}}
    cached.write("credit", "1", [("a", {"p": 0.3})])
    assert cached.read("credit", "1", ["a"]) == {"a": {"p": 0.3}}
    cached.drop_version("credit", "1")
    assert cached.read("credit", "1", ["a"]) == {}


def test_the_cache_keeps_at_most_its_size_dropping_the_least_recent(
    inner: MemoryPrecomputedStore,
) -> None:
    cached = CachedStore(inner, max_entries=2, ttl_s=30, clock=Clock())
    cached.read("credit", "1", ["a"])
    cached.read("credit", "1", ["b"])
    cached.read("credit", "1", ["a"])  # a is now the most recent
    cached.read("credit", "2", ["a"])  # evicts credit/1/b
    inner.reads.clear()
    cached.read("credit", "1", ["a", "b"])
    assert inner.reads == [("credit", "1", ("b",))]


def test_a_cache_must_hold_something() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        CachedStore(MemoryPrecomputedStore(), max_entries=0, ttl_s=30)
