"""Bursts of files: a transform covered by a later one hands its file over
(``cascade.transform.coalesce``), and the dataset's latest transform is a create-only
pointer per transform (``cascade.transform.catalog``)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest

from cascade.cli.sample_data import sample_csv
from cascade.core.context import StepContext
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.messages import DataValidated, ObjectRef, TrainRequest
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord, Trigger
from cascade.core.store import StoredObject
from cascade.steps.transform import handle_data_validated
from cascade.transform.catalog import (
    TransformPointer,
    advance_latest_transform,
    latest_transform,
    latest_transform_name,
    pointers_prefix,
    read_transform,
    snapshot_name,
)
from cascade.transform.coalesce import (
    CANDIDATES_READ,
    DECISIONS_READ,
    HandOverWatch,
    covering_run,
    decision_name,
    decisions_prefix,
    hand_over_open,
    record_decision,
)
from cascade.transform.snapshot import DataSnapshot, load_or_create_snapshot
from cascade.transform.spec import SnapshotFile
from cascade.validation.manifest import ValueSkew
from tests.unit.conftest import Clock
from tests.unit.transform.landing import MemoryLanding, accept, write_pipeline_config

DATASET = "credit"
CONFIG = "label: defaulted\nproblem_type: binary\n"
FIRST, SECOND = "credit-file000", "credit-file001"


@pytest.fixture
def landing() -> MemoryLanding:
    return MemoryLanding()


def _store(ctx: StepContext) -> MemoryArtifactStore:
    assert isinstance(ctx.artifacts, MemoryArtifactStore)
    return ctx.artifacts


def _validated(ctx: StepContext, run_id: str) -> DataValidated:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    ctx.ledger.ensure(
        RunRecord(
            run_id=run_id,
            dataset=DATASET,
            trigger=Trigger(kind="object"),
            created_at=now,
            updated_at=now,
        )
    )
    source = ObjectRef(bucket="cascade-landing", name=f"{DATASET}/f.csv", generation=1)
    return DataValidated(dataset=DATASET, run_id=run_id, source=source)


def _requests(ctx: StepContext) -> list[TrainRequest]:
    return [m for m in ctx.bus.published if isinstance(m, TrainRequest)]  # type: ignore[attr-defined]


def _first_snapshot_then_second_file(
    ctx: StepContext, clock: Clock, landing: MemoryLanding, *, second_generation: int = 11
) -> None:
    """The first run's step stored its snapshot (one file) and died before deciding;
    a second file was accepted and its run transformed both, a second later."""
    store = _store(ctx)
    accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=1), generation=11)
    load_or_create_snapshot(
        store, snapshot_name(FIRST), landing, dataset=DATASET, run_id=FIRST, now=clock()
    )
    if second_generation != 11:  # the first file overwritten: the second run reads the new one
        accept(store, landing, DATASET, "day-1.csv", sample_csv(300, seed=3), generation=12)
    accept(store, landing, DATASET, "day-2.csv", sample_csv(300, seed=2), generation=22, order=1)
    clock.advance(1)
    second = handle_data_validated(ctx, _validated(ctx, SECOND), event_id="e2", opener=landing)
    assert second is not None
    assert second.state == "succeeded", second
    assert read_transform(store, SECOND) is not None


def test_a_run_whose_files_a_later_transform_holds_is_not_transformed_again(
    step_context: StepContext, clock: Clock, landing: MemoryLanding
) -> None:
    write_pipeline_config(_store(step_context), DATASET, CONFIG)
    _first_snapshot_then_second_file(step_context, clock, landing)
    opened = len(landing.opened)

    clock.advance(5)  # the first run's event is delivered again
    first = handle_data_validated(
        step_context, _validated(step_context, FIRST), event_id="e1", opener=landing
    )

    assert first is not None
    assert first.state == "succeeded"
    assert first.outputs["transform_coalesced_into"] == SECOND
    assert read_transform(_store(step_context), FIRST) is None  # nothing materialised
    assert len(landing.opened) == opened  # no landed file read again
    assert [r.run_id for r in _requests(step_context)] == [SECOND]
    run = step_context.ledger.get(FIRST)
    assert run is not None
    assert run.state == "succeeded"
    assert run.lineage["transform_coalesced_into"] == SECOND
    latest = latest_transform(_store(step_context), DATASET)
    assert latest is not None
    assert (latest.run_id, latest.files) == (SECOND, 2)


def test_a_later_snapshot_without_this_runs_generation_does_not_cover_it(
    step_context: StepContext, clock: Clock, landing: MemoryLanding
) -> None:
    write_pipeline_config(_store(step_context), DATASET, CONFIG)
    _first_snapshot_then_second_file(step_context, clock, landing, second_generation=12)

    first = handle_data_validated(
        step_context, _validated(step_context, FIRST), event_id="e1", opener=landing
    )

    assert first is not None
    assert "transform_coalesced_into" not in first.outputs
    spec = read_transform(_store(step_context), FIRST)
    assert spec is not None
    assert [(f.uri.rsplit("/", 1)[-1], f.generation) for f in spec.snapshot] == [("day-1.csv", 11)]
    assert sorted(r.run_id for r in _requests(step_context)) == [FIRST, SECOND]


def test_a_file_whose_value_skews_ask_for_training_is_transformed_by_its_own_run(
    step_context: StepContext, clock: Clock, landing: MemoryLanding
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG + "training: {retrain_on: value_skew}\n")
    _first_snapshot_then_second_file(step_context, clock, landing)
    manifest_name = DatasetPaths(DATASET).accepted_manifest(FIRST)
    stored = store.read(manifest_name)
    assert stored is not None
    skew = ValueSkew(check="missing_share", feature="age", description="Missing rose.")
    manifest = stored.data.decode().replace(
        '"value_skews": []', f'"value_skews": [{skew.model_dump_json()}]'
    )
    store.write(manifest_name, manifest.encode())

    first = handle_data_validated(
        step_context, _validated(step_context, FIRST), event_id="e1", opener=landing
    )

    assert first is not None
    assert "transform_coalesced_into" not in first.outputs
    assert read_transform(store, FIRST) is not None
    [request] = [r for r in _requests(step_context) if r.run_id == FIRST]
    assert "value skew" in request.reason


def _snapshot(run_id: str, files: list[tuple[str, int]], at: datetime) -> DataSnapshot:
    return DataSnapshot(
        dataset=DATASET,
        run_id=run_id,
        files=[SnapshotFile(uri=uri, generation=gen, rows=10) for uri, gen in files],
        created_at=at,
    )


def _decide(store: MemoryArtifactStore, snapshot: DataSnapshot) -> None:
    store.create(snapshot_name(snapshot.run_id), snapshot.model_dump_json().encode())
    record_decision(store, snapshot)


AT = datetime(2026, 11, 27, 12, tzinfo=UTC)
OWN = [("gs://l/credit/a.csv", 1)]


def test_a_decision_is_recorded_once_however_often_its_step_runs() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    own = _snapshot("credit-a", OWN, AT)
    for _ in range(3):
        assert record_decision(store, own) == decision_name(DATASET, own)
    assert list(store.list_names(decisions_prefix(DATASET))) == [decision_name(DATASET, own)]


def test_an_earlier_decision_never_covers_a_later_one() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    earlier = _snapshot("credit-b", [*OWN, ("gs://l/credit/b.csv", 1)], AT - timedelta(seconds=1))
    own = _snapshot("credit-a", OWN, AT)
    _decide(store, earlier)
    _decide(store, own)
    assert covering_run(store, own) is None  # acyclic: only later decisions count
    assert covering_run(store, earlier) is None


class _CountingStore(MemoryArtifactStore):
    def __init__(self) -> None:
        super().__init__("cascade-artifacts")
        self.reads: list[str] = []

    def read(
        self, name: str, *, generation: int | None = None, metadata: bool = False
    ) -> StoredObject | None:
        self.reads.append(name)
        return super().read(name, generation=generation, metadata=metadata)


@pytest.mark.parametrize("later_files", [1, 3])
def test_the_reads_of_one_check_are_bounded_however_long_the_burst(later_files: int) -> None:
    """Later decisions too small to cover are not followed to their snapshots; those big
    enough are, but only the newest few."""
    store = _CountingStore()
    own = _snapshot("credit-a", [*OWN, ("gs://l/credit/b.csv", 1)], AT)
    _decide(store, own)
    for n in range(60):  # later snapshots that lack this run's files
        files = [(f"gs://l/credit/other-{k}.csv", n) for k in range(later_files)]
        _decide(store, _snapshot(f"credit-x{n:02d}", files, AT + timedelta(seconds=n + 1)))
    store.reads.clear()

    assert covering_run(store, own) is None
    decisions = [name for name in store.reads if name.startswith(decisions_prefix(DATASET))]
    snapshots = [name for name in store.reads if name.endswith("snapshot.json")]
    if later_files < len(own.files):
        assert (len(decisions), len(snapshots)) == (DECISIONS_READ, 0)
    else:
        assert (len(decisions), len(snapshots)) == (CANDIDATES_READ, CANDIDATES_READ)
    newest = sorted(store.list_names(decisions_prefix(DATASET)), reverse=True)
    assert decisions == newest[: len(decisions)]  # the newest first


def test_a_covering_snapshot_behind_decisions_too_small_to_cover_is_found() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    own = _snapshot("credit-a", [*OWN, ("gs://l/credit/b.csv", 1)], AT)
    covering = _snapshot(
        "credit-c", [*own_files(own), ("gs://l/credit/c.csv", 1)], AT + timedelta(seconds=1)
    )
    _decide(store, own)
    _decide(store, covering)
    for n in range(5):  # newer, but of one file: their snapshots are not even read
        _decide(store, _snapshot(f"credit-y{n}", OWN, AT + timedelta(seconds=2 + n)))
    assert covering_run(store, own) == "credit-c"


def own_files(snapshot: DataSnapshot) -> list[tuple[str, int]]:
    return [(f.uri, f.generation) for f in snapshot.files]


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not json", b'{"run_id": "credit-z", "files": -1}', b'{"run_id": 3}', b"\xff\xfe"],
)
def test_a_foreign_object_among_the_decisions_is_skipped_not_fatal(garbage: bytes) -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    own = _snapshot("credit-a", OWN, AT)
    _decide(store, own)
    store.create(f"{decisions_prefix(DATASET)}99999999999999-credit-z.json", garbage)
    store.create(snapshot_name("credit-z"), garbage)
    assert covering_run(store, own) is None


def _pointer(run_id: str, files: int, at: datetime) -> TransformPointer:
    return TransformPointer(
        run_id=run_id,
        transform_uri=f"gs://cascade-artifacts/runs/{run_id}/transform/transform.json",
        files=files,
        rows=files * 10,
        created_at=at,
    )


def test_the_latest_transform_is_the_one_covering_most_files_then_the_newest() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    assert latest_transform(store, DATASET) is None
    assert advance_latest_transform(store, _pointer("credit-b", 12, AT), DATASET)
    assert not advance_latest_transform(store, _pointer("credit-b", 12, AT), DATASET)  # a repeat
    advance_latest_transform(store, _pointer("credit-c", 9, AT + timedelta(hours=1)), DATASET)
    advance_latest_transform(store, _pointer("credit-a", 12, AT - timedelta(hours=1)), DATASET)
    latest = latest_transform(store, DATASET)
    assert latest is not None
    assert latest.run_id == "credit-b"
    advance_latest_transform(store, _pointer("credit-d", 12, AT + timedelta(seconds=1)), DATASET)
    advance_latest_transform(store, _pointer("credit-e", 1000, AT - timedelta(days=1)), DATASET)
    latest = latest_transform(store, DATASET)
    assert latest is not None
    assert latest.run_id == "credit-e"
    assert len(list(store.list_names(pointers_prefix(DATASET)))) == 5  # each written once


def test_an_earlier_versions_single_pointer_is_still_read_and_wins_when_it_covers_more() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    store.write_json(latest_transform_name(DATASET), _pointer("credit-old", 30, AT))
    latest = latest_transform(store, DATASET)
    assert latest is not None
    assert latest.run_id == "credit-old"
    advance_latest_transform(store, _pointer("credit-new", 31, AT), DATASET)
    latest = latest_transform(store, DATASET)
    assert latest is not None
    assert latest.run_id == "credit-new"


class _CoveredWhileSplitting(MemoryLanding):
    """Opening the first file of run A's split is when run B (a later snapshot holding
    A's files and one more) records its decision."""

    def __init__(self, store: MemoryArtifactStore, clock: Clock) -> None:
        super().__init__()
        self.store, self.clock = store, clock

    def open(self, uri: str, generation: int):  # type: ignore[no-untyped-def]
        if not self.opened:
            first = DataSnapshot.model_validate_json(
                (self.store.read(snapshot_name(FIRST)) or _missing()).data
            )
            extra = SnapshotFile(uri="gs://cascade-landing/credit/day-9.csv", generation=9, rows=1)
            later = first.model_copy(
                update={
                    "run_id": SECOND,
                    "files": [*first.files, extra],
                    "created_at": self.clock() + timedelta(seconds=1),
                }
            )
            _decide(self.store, later)
        return super().open(uri, generation)


def _missing() -> StoredObject:
    raise AssertionError("the first run's snapshot is stored before its split")


def test_a_split_covered_while_it_runs_is_abandoned_its_shards_deleted(
    step_context: StepContext, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(step_context)
    write_pipeline_config(store, DATASET, CONFIG)
    landing = _CoveredWhileSplitting(store, clock)
    for order in range(3):
        data = sample_csv(200, seed=order)
        accept(store, landing, DATASET, f"day-{order}.csv", data, generation=11, order=order)
    import cascade.steps.transform as transform_step

    monkeypatch.setattr(
        transform_step, "HandOverWatch", functools.partial(HandOverWatch, every_s=0.0)
    )
    uploads = _count_uploads(store, monkeypatch)

    first = handle_data_validated(
        step_context, _validated(step_context, FIRST), event_id="e1", opener=landing
    )

    assert first is not None
    assert first.outputs["transform_coalesced_into"] == SECOND
    assert len(landing.opened) == 1  # stopped before the second file
    assert len(uploads) == 2  # the train and eval writers, one row a shard
    assert list(store.list_names(f"runs/{FIRST}/transform/train/")) == []
    assert list(store.list_names(f"runs/{FIRST}/transform/eval/")) == []
    assert read_transform(store, FIRST) is None
    assert _requests(step_context) == []


def _count_uploads(store: MemoryArtifactStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Shards are uploaded as the split goes (one row per shard here)."""
    import cascade.transform.materialize as materialize

    written: list[str] = []
    real = materialize.ShardWriter

    def small(*args: object, **kwargs: object) -> object:
        kwargs["rows_per_shard"] = 1
        writer = real(*args, **kwargs)  # type: ignore[arg-type]
        written.append(str(args[1]))
        return writer

    monkeypatch.setattr(materialize, "ShardWriter", small)
    return written


@pytest.mark.parametrize(
    ("within_s", "age_s", "hands_over"), [(600, 599, True), (600, 601, False), (0, 0, False)]
)
def test_runs_hand_over_only_while_the_latest_transform_is_young(
    step_context: StepContext,
    clock: Clock,
    landing: MemoryLanding,
    within_s: int,
    age_s: int,
    hands_over: bool,
) -> None:
    """A stream that never pauses still gets transforms: past the window, every run
    materialises its own until one becomes the latest."""
    store = _store(step_context)
    write_pipeline_config(
        store, DATASET, CONFIG + f"transform: {{handover_within_s: {within_s}}}\n"
    )
    _first_snapshot_then_second_file(step_context, clock, landing)
    latest = latest_transform(store, DATASET)
    assert latest is not None
    clock.now = latest.created_at + timedelta(seconds=age_s)

    first = handle_data_validated(
        step_context, _validated(step_context, FIRST), event_id="e1", opener=landing
    )

    assert first is not None
    assert ("transform_coalesced_into" in first.outputs) is hands_over
    assert (read_transform(store, FIRST) is None) is hands_over


def test_before_any_transform_the_window_runs_from_the_oldest_decision() -> None:
    store = MemoryArtifactStore("cascade-artifacts")
    assert hand_over_open(store, DATASET, AT, 600)  # nothing yet
    _decide(store, _snapshot("credit-a", OWN, AT))
    assert hand_over_open(store, DATASET, AT + timedelta(seconds=599), 600)
    assert not hand_over_open(store, DATASET, AT + timedelta(seconds=600), 600)
    assert not hand_over_open(store, DATASET, AT, 0)


@pytest.mark.parametrize("value", ["-1", "86401", "'600'", "true", "1.5", "null"])
def test_a_hostile_hand_over_window_is_refused_naming_the_field(value: str) -> None:
    from cascade.core.pipeline_config import parse_pipeline_config

    with pytest.raises(Exception, match="handover_within_s"):
        parse_pipeline_config(
            CONFIG + f"transform: {{handover_within_s: {value}}}\n", where="pipeline.yaml"
        )
