"""The chunks parameter-server workers read: the training split encoded as the step takes
it, every row once, in chunks of whole batches; read back by TensorFlow's own ops (what
the worker runs) they are the rows ``encode_examples`` gives for the transform's shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from cascade.trainer.data import ShardReader, download_shards
from cascade.trainer.parameter_servers import (
    CHUNK_BATCHES,
    encode_examples,
    write_chunks,
)
from cascade.trainer.storage import TrainerStorage
from cascade.transform.spec import TransformSpec
from tests.unit.trainer.builders import write_run

BATCH = 16


def _rows(
    numeric: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], targets: object
) -> list[bytes]:
    """Each row as bytes, sorted: a multiset to compare."""
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 1)
    table = np.concatenate([numeric.astype(np.float64), ids.astype(np.float64), targets], axis=1)
    return sorted(row.tobytes() for row in table)


def _read_back(path: str, spec: TransformSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    features = {n: tf.io.FixedLenFeature([], tf.string) for n in ("numeric", "ids", "targets")}
    parsed = tf.io.parse_single_example(tf.io.read_file(path), features)
    target_dtype = ShardReader(spec).encoder.target_dtype
    return (
        tf.io.parse_tensor(parsed["numeric"], tf.float32).numpy(),
        tf.io.parse_tensor(parsed["ids"], tf.int64).numpy(),
        tf.io.parse_tensor(parsed["targets"], target_dtype).numpy(),
    )


def test_the_chunks_hold_every_training_row_once_in_whole_batches(
    storage: TrainerStorage, tmp_path: Path
) -> None:
    _, spec, _ = write_run(storage, rows=900, problem_type="multiclass")
    files = download_shards(storage, spec.train_files, tmp_path / "data", "train")
    expected = encode_examples(spec, ShardReader(spec).read_all(files))

    chunks = write_chunks(
        spec,
        files,
        str(tmp_path / "chunks"),
        "train",
        chunk_rows=BATCH * CHUNK_BATCHES,
        rng=np.random.default_rng(3),
    )

    total = len(expected[2])
    assert chunks.total_rows == total
    assert chunks.rows[:-1] == [BATCH * CHUNK_BATCHES] * (len(chunks.rows) - 1)
    assert 0 < chunks.rows[-1] <= BATCH * CHUNK_BATCHES
    read = [_read_back(path, spec) for path in chunks.paths]
    assert [len(targets) for _, _, targets in read] == chunks.rows
    joined = tuple(np.concatenate([chunk[i] for chunk in read]) for i in range(3))
    assert joined[2].dtype == np.int32  # a class index, as the step takes it
    assert _rows(*joined) == _rows(*expected)
    # shuffled: not the shards' order
    assert not np.array_equal(joined[1], expected[1])


def test_the_chunk_names_are_derived_not_taken_from_the_shards(
    storage: TrainerStorage, tmp_path: Path
) -> None:
    _, spec, _ = write_run(storage, rows=300)
    files = download_shards(storage, spec.eval_files, tmp_path / "data", "eval")

    chunks = write_chunks(spec, files, str(tmp_path / "chunks"), "eval", chunk_rows=32, rng=None)

    assert [Path(p).name for p in chunks.paths] == [
        f"eval-{i:05d}.chunk" for i in range(len(chunks.paths))
    ]
    assert all(Path(p).parent == tmp_path / "chunks" for p in chunks.paths)
