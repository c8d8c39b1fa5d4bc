"""A deterministic train/eval split: a row is eval when its salted hash falls under a fraction.

The hash depends only on the row's values (``row_hash``: every shard column, in
schema order) or on its key (``key``: every row of one key lands on the same side),
and on the salt, never on file order, batch boundaries or how many files the snapshot
has. So a row is on the same side in every run, and across re-runs of one run.

Strings are hashed once per distinct value (salted BLAKE2b), numbers by their IEEE
bits through SplitMix64; columns combine by mixing. All vectorised with numpy but the
per-distinct-string digest.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped,unused-ignore]

from cascade.transform.spec import SplitSpec

__all__ = ["eval_fractions", "eval_mask", "row_hashes"]

Hashes = npt.NDArray[np.uint64]

_NULL = np.uint64(0x9E3779B97F4A7C15)
_NAN_BITS = np.float64("nan").view(np.uint64)
_FRACTION_BITS = 53


def _splitmix64(values: Hashes) -> Hashes:
    mixed = values + np.uint64(0x9E3779B97F4A7C15)
    mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    result: Hashes = mixed ^ (mixed >> np.uint64(31))
    return result


def _salt_seed(salt: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "big"))


def _string_hashes(column: pa.ChunkedArray, salt: bytes) -> Hashes:
    encoded = pc.dictionary_encode(column.combine_chunks())
    digests = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8, key=salt).digest(), "big")
            for value in encoded.dictionary.to_pylist()
        ),
        dtype=np.uint64,
        count=len(encoded.dictionary),
    )
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    hashes = np.full(len(indices), _NULL, dtype=np.uint64)
    present = indices >= 0
    hashes[present] = digests[indices[present]]
    return hashes


def _number_hashes(column: pa.ChunkedArray, seed: np.uint64) -> Hashes:
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    values = values + 0.0  # -0.0 and 0.0 are one value
    bits = values.view(np.uint64).copy()
    bits[np.isnan(values)] = _NAN_BITS
    hashes = _splitmix64(bits ^ seed)
    missing = pc.is_null(column).to_numpy(zero_copy_only=False)
    hashes[missing] = _NULL
    return hashes


def _column_hashes(column: pa.ChunkedArray, salt: str) -> Hashes:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _string_hashes(column, salt.encode()[:64])
    return _number_hashes(column, _salt_seed(salt))


def row_hashes(table: pa.Table, columns: list[str], salt: str) -> Hashes:
    """One 64-bit hash per row of ``table`` over ``columns`` (in that order)."""
    combined = np.full(table.num_rows, _salt_seed(salt), dtype=np.uint64)
    for name in columns:
        column_hash = _column_hashes(table.column(name), salt)
        rotated = (combined << np.uint64(27)) | (combined >> np.uint64(37))
        combined = _splitmix64(rotated ^ column_hash)
    return combined


def eval_fractions(table: pa.Table, split: SplitSpec) -> npt.NDArray[np.float64]:
    """Each row's hash as a fraction in [0, 1): the row is eval when it is under
    ``split.eval_fraction``.

    ``key`` splits hash the key column; rows without a key fall back to their row hash.
    """
    hashes = row_hashes(table, table.column_names, split.salt)
    if split.method == "key" and split.key_column:
        key = table.column(split.key_column)
        by_key = row_hashes(table, [split.key_column], split.salt)
        has_key = pc.is_valid(key).to_numpy(zero_copy_only=False)
        hashes = np.where(has_key, by_key, hashes)
    fractions: npt.NDArray[np.float64] = (hashes >> np.uint64(64 - _FRACTION_BITS)).astype(
        np.float64
    ) / float(1 << _FRACTION_BITS)
    return fractions


def eval_mask(table: pa.Table, split: SplitSpec) -> npt.NDArray[np.bool_]:
    """True for the rows of ``table`` whose hash puts them in the eval split."""
    mask: npt.NDArray[np.bool_] = eval_fractions(table, split) < split.eval_fraction
    return mask
