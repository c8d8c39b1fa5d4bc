"""The newest files: which they are, every file in the eval split, and the row marker."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.transform.materialize import file_batches, write_split_shards
from cascade.transform.newest import NEWEST_FILES_COLUMN, newest_column_name, newest_files
from cascade.transform.spec import SnapshotFile, SplitSpec
from cascade.transform.split import eval_mask
from tests.unit.transform.landing import MemoryLanding

SCHEMA = pa.schema([pa.field("x", pa.float64()), pa.field("y", pa.string())])
MARKER = "__cascade_newest_file"


def _file(name: str, generation: int = 1, rows: int = 10) -> SnapshotFile:
    return SnapshotFile(uri=f"gs://land/d/{name}", generation=generation, rows=rows)


def _csv(values: range) -> bytes:
    return ("x,y\n" + "".join(f"{value},{value % 2}\n" for value in values)).encode()


def _land(landing: MemoryLanding, name: str, values: range, generation: int = 1) -> SnapshotFile:
    uri = landing.put(f"d/{name}", _csv(values), generation)
    return SnapshotFile(uri=uri, generation=generation, rows=len(values))


def _read(store: MemoryArtifactStore, names: list[str]) -> pa.Table:
    tables = []
    for name in names:
        stored = store.read(name)
        assert stored is not None
        tables.append(pq.read_table(io.BytesIO(stored.data)))
    return pa.concat_tables(tables)


def _hashed_to_eval(landing: MemoryLanding, file: SnapshotFile, split: SplitSpec) -> int:
    return sum(
        int(eval_mask(table, split).sum())
        for table in file_batches(file, landing, SCHEMA, ValidationConfig())
    )


def test_the_newest_files_are_those_the_production_model_was_not_trained_on() -> None:
    day1, day2, day3 = _file("day-1.csv"), _file("day-2.csv"), _file("day-3.csv")
    day1_rewritten = _file("day-1.csv", generation=2)

    assert newest_files([day1, day2, day3], [day1]) == [day2, day3]
    assert newest_files([day1, day1_rewritten], [day1]) == [day1_rewritten]


def test_without_a_production_snapshot_or_anything_unseen_the_last_accepted_file_is_newest() -> (
    None
):
    day1, day2 = _file("day-1.csv"), _file("day-2.csv")

    assert newest_files([day1, day2], None) == [day2]
    assert newest_files([day1, day2], [day1, day2]) == [day2]
    assert newest_files([], None) == []


def test_the_marker_column_never_takes_the_name_of_a_data_column() -> None:
    assert newest_column_name(["x", "y"]) == NEWEST_FILES_COLUMN
    assert newest_column_name(["x", NEWEST_FILES_COLUMN]) == f"_{NEWEST_FILES_COLUMN}"


def test_a_small_newest_file_whose_rows_all_hashed_to_train_still_has_eval_rows() -> None:
    landing, store = MemoryLanding(), MemoryArtifactStore("cascade-artifacts")
    split = SplitSpec(eval_fraction=0.05, salt="cascade:d")
    old = _land(landing, "day-1.csv", range(0, 400))
    new = _land(landing, "day-2.csv", range(1000, 1006))
    assert _hashed_to_eval(landing, new, split) == 0  # the case this test is about

    shards = write_split_shards(
        store,
        [old, new],
        landing,
        schema=SCHEMA,
        split=split,
        folder="runs/r/transform",
        config=ValidationConfig(),
        newest=[new],
        newest_column=MARKER,
    )

    evaluation = _read(store, shards.eval_names)
    train = _read(store, shards.train_names)
    new_eval = [row for row in evaluation.to_pylist() if row["x"] >= 1000]
    assert len(new_eval) == 1
    assert shards.file_eval_rows[1] == 1
    assert shards.newest_eval_rows == 1
    assert sum(1 for row in train.to_pylist() if row["x"] >= 1000) == 5
    assert shards.train_rows + shards.eval_rows == 406
    assert shards.file_eval_rows[0] == _hashed_to_eval(landing, old, split)


def test_every_row_is_marked_with_whether_it_comes_from_a_newest_file() -> None:
    landing, store = MemoryLanding(), MemoryArtifactStore("cascade-artifacts")
    split = SplitSpec(eval_fraction=0.3, salt="cascade:d")
    old = _land(landing, "day-1.csv", range(0, 200))
    new = _land(landing, "day-2.csv", range(1000, 1100))

    shards = write_split_shards(
        store,
        [old, new],
        landing,
        schema=SCHEMA,
        split=split,
        folder="runs/r/transform",
        config=ValidationConfig(),
        newest=[new],
        newest_column=MARKER,
    )

    for names in (shards.train_names, shards.eval_names):
        table = _read(store, names)
        assert table.schema.field(MARKER).type == pa.bool_()
        for row in table.to_pylist():
            assert row[MARKER] == (row["x"] >= 1000)
    assert shards.newest_eval_rows == shards.file_eval_rows[1] > 0


def test_the_marker_does_not_move_a_row_to_the_other_side_of_the_split() -> None:
    landing = MemoryLanding()
    split = SplitSpec(eval_fraction=0.3, salt="cascade:d")
    files = [
        _land(landing, "day-1.csv", range(0, 300)),
        _land(landing, "day-2.csv", range(500, 800)),
    ]
    sides = []
    for newest, column in (([], None), (files[1:], MARKER)):
        store = MemoryArtifactStore("cascade-artifacts")
        shards = write_split_shards(
            store,
            files,
            landing,
            schema=SCHEMA,
            split=split,
            folder="f",
            config=ValidationConfig(),
            newest=newest,
            newest_column=column,
        )
        sides.append(sorted(_read(store, shards.eval_names).column("x").to_pylist()))

    assert sides[0] == sides[1]


def test_a_rerun_with_a_held_back_row_writes_identical_shards() -> None:
    landing = MemoryLanding()
    split = SplitSpec(eval_fraction=0.05, salt="cascade:d")
    files = [
        _land(landing, "day-1.csv", range(0, 400)),
        _land(landing, "day-2.csv", range(1000, 1006)),
    ]
    written = []
    for _ in range(2):
        store = MemoryArtifactStore("cascade-artifacts")
        shards = write_split_shards(
            store,
            files,
            landing,
            schema=SCHEMA,
            split=split,
            folder="f",
            config=ValidationConfig(),
            rows_per_shard=50,
            newest=files[1:],
            newest_column=MARKER,
        )
        written.append(
            [store.read(name).data for name in shards.train_names + shards.eval_names]  # type: ignore[union-attr]
        )

    assert written[0] == written[1]


def test_a_file_with_a_single_row_stays_in_train() -> None:
    landing, store = MemoryLanding(), MemoryArtifactStore("cascade-artifacts")
    split = SplitSpec(eval_fraction=0.05, salt="cascade:d")
    old = _land(landing, "day-1.csv", range(0, 400))
    single = _land(landing, "day-2.csv", range(1000, 1001))
    assert _hashed_to_eval(landing, single, split) == 0

    shards = write_split_shards(
        store,
        [old, single],
        landing,
        schema=SCHEMA,
        split=split,
        folder="f",
        config=ValidationConfig(),
    )

    assert shards.file_eval_rows[1] == 0
    assert 1000.0 in _read(store, shards.train_names).column("x").to_pylist()
