"""The split: by row or key hash, independent of batching, order and other rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cascade.transform.spec import SplitSpec
from cascade.transform.split import eval_mask

ROWS = 4000


def _table(rows: int = ROWS, offset: int = 0) -> pa.Table:
    ids = [f"c{index % 500:05d}" for index in range(offset, offset + rows)]
    return pa.table(
        {
            "income": pa.array([float(index) * 1.5 for index in range(offset, offset + rows)]),
            "region": pa.array(
                [("north", "south", None)[index % 3] for index in range(offset, offset + rows)]
            ),
            "customer_id": pa.array(ids),
        }
    )


def _mask(table: pa.Table, split: SplitSpec) -> list[bool]:
    return [bool(value) for value in eval_mask(table, split)]


def test_row_hash_split_is_stable_across_batching_and_order() -> None:
    split = SplitSpec(method="row_hash", eval_fraction=0.25, salt="cascade:credit")
    table = _table()

    whole = _mask(table, split)
    batched = [
        value
        for batch in table.to_batches(max_chunksize=333)
        for value in _mask(pa.Table.from_batches([batch]), split)
    ]
    reversed_rows = _mask(table.take(pa.array(range(ROWS - 1, -1, -1))), split)

    assert whole == batched
    assert whole == reversed_rows[::-1]
    assert 0.2 < sum(whole) / ROWS < 0.3


def test_salt_changes_the_split() -> None:
    table = _table()

    first = _mask(table, SplitSpec(eval_fraction=0.25, salt="cascade:a"))
    second = _mask(table, SplitSpec(eval_fraction=0.25, salt="cascade:b"))

    assert first != second


def test_key_split_keeps_every_row_of_a_key_on_one_side() -> None:
    split = SplitSpec(method="key", key_column="customer_id", eval_fraction=0.2, salt="s")
    table = _table()

    mask = eval_mask(table, split)

    ids = np.array(table.column("customer_id").to_pylist())
    for key in set(ids.tolist()):
        sides = set(mask[ids == key].tolist())
        assert len(sides) == 1, key
    assert 0.1 < mask.mean() < 0.3


def test_a_row_lands_on_the_same_side_whatever_else_the_snapshot_holds() -> None:
    split = SplitSpec(eval_fraction=0.3, salt="cascade:credit")
    small = _table(rows=100)
    large = pa.concat_tables([_table(rows=700, offset=100), small])

    assert _mask(small, split) == _mask(large, split)[700:]


def test_types_matter_only_through_values_negative_zero_and_nulls() -> None:
    split = SplitSpec(eval_fraction=0.5, salt="x")
    zeros = pa.table({"v": pa.array([0.0, -0.0, None, None], pa.float64())})

    mask = _mask(zeros, split)

    assert mask[0] == mask[1]
    assert mask[2] == mask[3]
