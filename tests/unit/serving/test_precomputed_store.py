"""The precomputed-answers store: the contract on the Bigtable emulator (real client) and
in memory, hostile keys, version isolation, dropping a version, provisioning."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cascade.localcloud.bigtable_emulator import bigtable_spec, provision_bigtable
from cascade.serving import precomputed
from cascade.serving.precomputed import (
    MAX_KEY_BYTES,
    BigtableStore,
    MemoryPrecomputedStore,
    PrecomputedSettings,
    PrecomputedStore,
    StoreUnavailableError,
    ensure_table,
    row_key,
    store_factory,
)
from tests.fixtures_bigtable import BigtableEmulator, bigtable, bigtable_emulator

__all__ = ["bigtable", "bigtable_emulator"]  # the fixtures, used by name

HOSTILE_KEYS = [
    "#",
    "a#b#c",
    "credit#1#00#x",  # looks like a whole row key
    "\x00",
    "nul\x00inside",
    "ключ-🔑-鍵",
    "\u202eright-to-left",
    "../../etc/passwd",
    ".*",  # a regex would match everything; keys are compared exactly
    " ",
    "k" * MAX_KEY_BYTES,
    "é" * (MAX_KEY_BYTES // 2),  # 2 bytes each: exactly the limit
]
REFUSED_KEYS = ["", "k" * (MAX_KEY_BYTES + 1), "é" * (MAX_KEY_BYTES // 2 + 1), "\ud800"]


def answer(key: str, version: str) -> dict[str, Any]:
    return {"key": key, "probabilities": [0.25, 0.75], "classes": f"v{version}", "n": len(key)}


@pytest.fixture(params=["memory", "bigtable"])
def store(request: pytest.FixtureRequest) -> Iterator[PrecomputedStore]:
    if request.param == "memory":
        made: PrecomputedStore = MemoryPrecomputedStore()
    else:
        emulator: BigtableEmulator = request.getfixturevalue("bigtable")
        made = BigtableStore(emulator.project, emulator.instance, emulator.table)
    yield made
    made.close()


def unique_dataset(request: pytest.FixtureRequest) -> str:
    """A dataset per test: the emulator's table is shared by the module."""
    digest = abs(hash(request.node.nodeid)) % 10**8
    return f"ds{digest}"


def test_written_answers_are_read_back_by_key(
    store: PrecomputedStore, request: pytest.FixtureRequest
) -> None:
    dataset = unique_dataset(request)
    rows = [(f"user-{n}", answer(f"user-{n}", "1")) for n in range(5)]

    assert store.write(dataset, "1", rows) == 5
    found = store.read(dataset, "1", ["user-0", "user-3", "unknown", "user-3"])

    assert found == {"user-0": answer("user-0", "1"), "user-3": answer("user-3", "1")}


def test_hostile_keys_round_trip_exactly_and_never_match_each_other(
    store: PrecomputedStore, request: pytest.FixtureRequest
) -> None:
    dataset = unique_dataset(request)
    store.write(dataset, "1", [(key, answer(key, "1")) for key in HOSTILE_KEYS])

    found = store.read(dataset, "1", [*HOSTILE_KEYS, "a", "a#b", "nul", "k" * 10, "*"])

    assert found == {key: answer(key, "1") for key in HOSTILE_KEYS}


@pytest.mark.parametrize("key", REFUSED_KEYS, ids=["empty", "huge", "huge-utf8", "surrogate"])
def test_a_key_that_cannot_be_stored_is_refused_on_write_and_a_miss_on_read(
    store: PrecomputedStore, request: pytest.FixtureRequest, key: str
) -> None:
    dataset = unique_dataset(request)

    with pytest.raises(ValueError, match="entity key"):
        store.write(dataset, "1", [("fine", answer("fine", "1")), (key, answer("x", "1"))])

    assert store.read(dataset, "1", [key]) == {}
    assert store.read(dataset, "1", ["fine"]) == {}  # nothing of the refused batch landed


def test_a_version_reads_only_its_own_answers(
    store: PrecomputedStore, request: pytest.FixtureRequest
) -> None:
    dataset = unique_dataset(request)
    store.write(dataset, "1", [("head", answer("head", "1")), ("old-only", answer("o", "1"))])
    store.write(dataset, "2", [("head", answer("head", "2"))])
    store.write(f"{dataset}-x", "2", [("other-dataset", answer("x", "2"))])

    assert store.read(dataset, "2", ["head", "old-only", "other-dataset"]) == {
        "head": answer("head", "2")
    }
    assert store.read(dataset, "1", ["head"]) == {"head": answer("head", "1")}


def test_rewriting_a_key_serves_the_newest_answer(
    store: PrecomputedStore, request: pytest.FixtureRequest
) -> None:
    dataset = unique_dataset(request)
    store.write(dataset, "1", [("k", {"score": 1})])
    store.write(dataset, "1", [("k", {"score": 2})])

    assert store.read(dataset, "1", ["k"]) == {"k": {"score": 2}}


def test_dropping_a_version_removes_its_answers_only(
    store: PrecomputedStore, request: pytest.FixtureRequest
) -> None:
    dataset = unique_dataset(request)
    for version in ("1", "10", "2"):
        store.write(dataset, version, [(key, answer(key, version)) for key in ("a", "b", "#")])
    store.write(f"{dataset}1", "1", [("a", answer("a", "1"))])  # a dataset with a longer name

    assert store.drop_version(dataset, "1") == 3

    assert store.read(dataset, "1", ["a", "b", "#"]) == {}
    assert store.read(dataset, "10", ["a", "b", "#"]) == {k: answer(k, "10") for k in "ab#"}
    assert store.read(dataset, "2", ["a"]) == {"a": answer("a", "2")}
    assert store.read(f"{dataset}1", "1", ["a"]) == {"a": answer("a", "1")}
    assert store.drop_version(dataset, "1") == 0


def test_writes_and_drops_go_in_batches(
    store: PrecomputedStore, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = unique_dataset(request)
    monkeypatch.setattr(precomputed, "MUTATION_BATCH", 7)
    keys = [f"k{n:04d}" for n in range(50)]

    assert store.write(dataset, "3", ((key, {"n": i}) for i, key in enumerate(keys))) == 50
    assert store.read(dataset, "3", keys) == {key: {"n": i} for i, key in enumerate(keys)}
    assert store.drop_version(dataset, "3") == 50
    assert store.read(dataset, "3", keys) == {}


def test_bigtable_writes_one_mutate_rows_call_per_batch(
    bigtable: BigtableEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precomputed, "MUTATION_BATCH", 4)
    store = BigtableStore(bigtable.project, bigtable.instance, bigtable.table)
    calls: list[int] = []
    original = store._table.bulk_mutate_rows

    def counting(entries: list[Any], **kwargs: Any) -> None:
        calls.append(len(entries))
        original(entries, **kwargs)

    monkeypatch.setattr(store._table, "bulk_mutate_rows", counting)
    try:
        store.write("batches", "1", [(f"k{n}", {"n": n}) for n in range(10)])
    finally:
        store.close()

    assert calls == [4, 4, 2]


@pytest.mark.parametrize(
    ("dataset", "version"), [("Bad", "1"), ("a#b", "1"), ("ok", "1a"), ("ok", ""), ("ok", "\u0661")]
)
def test_a_bad_dataset_or_version_is_refused(dataset: str, version: str) -> None:
    store = MemoryPrecomputedStore()

    with pytest.raises(ValueError, match="invalid"):
        store.write(dataset, version, [("k", {"n": 1})])


def test_row_keys_are_salted_so_sequential_keys_spread_over_the_table() -> None:
    keys = [row_key("credit", "1", f"user-{n:08d}") for n in range(1000)]
    salts = {key.split(b"#")[2] for key in keys}

    assert all(key.startswith(b"credit#1#") for key in keys)
    assert len(salts) > 200  # of 256 buckets
    assert keys[0].endswith(b"#user-00000000")


def test_an_unreachable_bigtable_is_a_store_error(
    bigtable: BigtableEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port_block

    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{free_port_block(1)}")
    store = BigtableStore(bigtable.project, bigtable.instance, bigtable.table, read_timeout_s=0.5)
    try:
        with pytest.raises(StoreUnavailableError, match="reading precomputed answers failed"):
            store.read("credit", "1", ["k"])
    finally:
        store.close()


def test_ensure_table_is_idempotent_and_adds_a_missing_family(bigtable: BigtableEmulator) -> None:
    from google.cloud.bigtable_admin_v2.types import ColumnFamily

    assert ensure_table(bigtable.project, bigtable.instance, "fresh") is True
    assert ensure_table(bigtable.project, bigtable.instance, "fresh") is False
    assert provision_bigtable(bigtable.local, port=bigtable.port) is False  # the fixture's

    admin = _admin(bigtable)
    try:
        admin.create_table(
            parent=f"projects/{bigtable.project}/instances/{bigtable.instance}",
            table_id="bare",
            table={"column_families": {"other": ColumnFamily()}},
        )
    finally:
        admin.transport.close()
    assert ensure_table(bigtable.project, bigtable.instance, "bare") is True
    store = BigtableStore(bigtable.project, bigtable.instance, "bare")
    try:
        store.write("credit", "1", [("k", {"n": 1})])
        assert store.read("credit", "1", ["k"]) == {"k": {"n": 1}}
    finally:
        store.close()


def _admin(bigtable: BigtableEmulator) -> Any:
    import grpc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.bigtable_admin_v2 import BigtableTableAdminClient
    from google.cloud.bigtable_admin_v2.services.bigtable_table_admin.transports import (
        BigtableTableAdminGrpcTransport,
    )

    transport = BigtableTableAdminGrpcTransport(
        channel=grpc.insecure_channel(bigtable.host), credentials=AnonymousCredentials()
    )
    return BigtableTableAdminClient(transport=transport)


def test_the_spec_starts_the_gcloud_emulator_on_loopback(bigtable: BigtableEmulator) -> None:
    spec = bigtable_spec(bigtable.local, {}, port=bigtable.port)

    assert spec.argv[1:5] == ["beta", "emulators", "bigtable", "start"]
    assert f"--host-port=127.0.0.1:{bigtable.port}" in spec.argv
    assert spec.ready() is True
    assert bigtable_spec(bigtable.local, {}, port=1).ready() is False


def test_the_factory_makes_no_store_without_an_instance(bigtable: BigtableEmulator) -> None:
    assert store_factory(PrecomputedSettings(), "p") is None

    make = store_factory(
        PrecomputedSettings(instance=bigtable.instance, table=bigtable.table), bigtable.project
    )
    assert make is not None
    store = make()
    try:
        store.write("factory", "1", [("k", {"n": 1})])
        assert store.read("factory", "1", ["k"]) == {"k": {"n": 1}}
    finally:
        store.close()
