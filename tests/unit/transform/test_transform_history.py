"""A dataset's transform history is pruned of what no reader needs (transform.history),
by the reconcile sweep, and never of anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore
from cascade.steps.reconcile import reconcile
from cascade.transform.catalog import (
    TransformPointer,
    advance_latest_transform,
    latest_transform,
    pointers_prefix,
)
from cascade.transform.coalesce import decision_time, decisions_prefix
from cascade.transform.history import DECISIONS_KEPT_FOR, POINTERS_KEPT, prunable_history
from tests.unit.conftest import Clock

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STALE = timedelta(minutes=10)


def _pointer(store: MemoryArtifactStore, dataset: str, files: int, minute: int) -> str:
    pointer = TransformPointer(
        run_id=f"{dataset}-run-{files}-{minute}",
        transform_uri=f"gs://cascade-artifacts/runs/{dataset}-run-{files}-{minute}/transform",
        files=files,
        rows=files * 10,
        created_at=NOW - timedelta(minutes=minute),
    )
    assert advance_latest_transform(store, pointer, dataset)
    return pointer.run_id


def _decision(store: MemoryArtifactStore, dataset: str, taken: datetime, run: str) -> str:
    millis = int(taken.timestamp() * 1000)
    name = f"{decisions_prefix(dataset)}{millis:014d}-{run}.json"
    store.write(name, b'{"run_id": "%s", "files": 1}' % run.encode())
    return name


def _names(store: MemoryArtifactStore, prefix: str = "datasets/") -> list[str]:
    return list(store.list_names(prefix))


# prunable_history ----------------------------------------------------------------------


def test_pointers_past_the_kept_ones_are_prunable_and_the_latest_stays_the_latest() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    for files in range(1, POINTERS_KEPT + 6):
        _pointer(store, "credit", files, minute=100 - files)
    before = latest_transform(store, "credit")

    pruned = prunable_history(_names(store), "credit", NOW)

    pointers = _names(store, pointers_prefix("credit"))
    assert pruned == pointers[POINTERS_KEPT:]
    assert len(pruned) == 5
    for name in pruned:
        assert store.delete(name)
    assert latest_transform(store, "credit") == before
    assert before is not None
    assert before.files == POINTERS_KEPT + 5


def test_no_pointer_is_prunable_while_there_are_at_most_the_kept_number() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    for files in range(1, POINTERS_KEPT + 1):
        _pointer(store, "credit", files, minute=files)

    assert prunable_history(_names(store), "credit", NOW) == []


def test_decisions_older_than_the_kept_period_are_prunable_younger_ones_are_not() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    old = _decision(store, "credit", NOW - DECISIONS_KEPT_FOR - timedelta(seconds=1), "a")
    _decision(store, "credit", NOW - DECISIONS_KEPT_FOR + timedelta(seconds=1), "b")
    _decision(store, "credit", NOW, "c")

    assert prunable_history(_names(store), "credit", NOW) == [old]


def test_only_the_named_datasets_history_is_pruned() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    long_ago = NOW - 2 * DECISIONS_KEPT_FOR
    mine = _decision(store, "credit", long_ago, "a")
    _decision(store, "credit-eu", long_ago, "b")  # shares the prefix "datasets/credit"

    assert prunable_history(_names(store), "credit", NOW) == [mine]


@pytest.mark.parametrize(
    "stem",
    [
        "nested/00000000000001-a.json",  # not a direct child
        "00000000000001-a.json.tmp",  # not a .json
        "0000000000001-a.json",  # 13 digits
        "000000000000001-a.json",  # 15 digits
        "00000000000001a.json",  # no dash
        "00000000000001-.json",  # no run
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662\u0663\u0664-a.json",
        "notes.json",
        "-a.json",
    ],
)
def test_a_decision_folder_object_this_code_did_not_name_is_left_alone(stem: str) -> None:
    names = [f"{decisions_prefix('credit')}{stem}"]

    assert prunable_history(names, "credit", NOW + 1000 * DECISIONS_KEPT_FOR) == []


def test_a_pointer_folder_object_this_code_did_not_name_is_never_counted_or_pruned() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    for files in range(1, POINTERS_KEPT + 2):
        _pointer(store, "credit", files, minute=files)
    foreign = [
        f"{pointers_prefix('credit')}README.json",
        f"{pointers_prefix('credit')}9999999999-99999999999999-x.json/inner.json",
        f"{pointers_prefix('credit')}0000000001-1.json",
    ]
    for name in foreign:
        store.write(name, b"{}")

    pruned = prunable_history(_names(store), "credit", NOW)

    assert len(pruned) == 1
    assert not set(pruned) & set(foreign)


def test_decision_time_reads_the_snapshot_time_a_decision_name_carries() -> None:
    taken = datetime(2026, 11, 27, 11, 59, 58, 123000, tzinfo=UTC)
    millis = int(taken.timestamp() * 1000)

    assert decision_time(f"{decisions_prefix('credit')}{millis:014d}-r.json") == taken
    assert decision_time(f"{decisions_prefix('credit')}{millis}-r.json") is None  # 13 digits
    assert decision_time("datasets/credit/transform_decisions/x-r.json") is None


# the reconcile sweep -------------------------------------------------------------------


def _sweep(step_context: StepContext, dataset: str | None = None) -> int:
    step_context.landing = MemoryArtifactStore("cascade-landing")
    report = reconcile(
        step_context,
        stale_after=STALE,
        dataset=dataset,
        start_upload=lambda ctx, event: None,
    )
    return report.history_pruned


def test_the_reconcile_sweep_deletes_each_datasets_prunable_history_once(
    step_context: StepContext, clock: Clock
) -> None:
    store = step_context.artifacts
    assert isinstance(store, MemoryArtifactStore)
    for dataset in ("credit", "churn"):
        for files in range(1, POINTERS_KEPT + 3):
            _pointer(store, dataset, files, minute=files)
        _decision(store, dataset, clock.now - 2 * DECISIONS_KEPT_FOR, "old")
        _decision(store, dataset, clock.now, "new")
    store.write("datasets/credit/pipeline.yaml", b"label: y\n")
    before = {dataset: latest_transform(store, dataset) for dataset in ("credit", "churn")}

    assert _sweep(step_context) == 2 * (2 + 1)
    assert _sweep(step_context) == 0  # nothing left to prune: the sweep is idempotent

    for dataset in ("credit", "churn"):
        assert len(_names(store, pointers_prefix(dataset))) == POINTERS_KEPT
        assert [n.rsplit("-", 1)[-1] for n in _names(store, decisions_prefix(dataset))] == [
            "new.json"
        ]
        assert latest_transform(store, dataset) == before[dataset]
    assert store.read("datasets/credit/pipeline.yaml") is not None


def test_a_sweep_of_one_dataset_prunes_only_that_dataset(
    step_context: StepContext, clock: Clock
) -> None:
    store = step_context.artifacts
    assert isinstance(store, MemoryArtifactStore)
    for dataset in ("credit", "churn"):
        _decision(store, dataset, clock.now - 2 * DECISIONS_KEPT_FOR, "old")

    assert _sweep(step_context, dataset="churn") == 1

    assert len(_names(store, decisions_prefix("credit"))) == 1
    assert _names(store, decisions_prefix("churn")) == []
