"""Statistics: values on small data, TFMD proto round trip, and exact merging."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from cascade.core.validation_config import ValidationConfig
from cascade.validation.statistics import (
    compute_statistics,
    merge_statistics,
    statistics_proto,
    summary_of_statistics,
)
from cascade.validation.tfmd import statistics_pb2
from tests.unit.validation.builders import csv_source, summary_of

CONFIG = ValidationConfig()


def _feature(statistics: statistics_pb2.DatasetFeatureStatisticsList, name: str):  # type: ignore[no-untyped-def]
    return next(f for f in statistics.datasets[0].features if f.path.step[0] == name)


def test_csv_statistics_count_missing_zeros_and_values(tmp_path: Path) -> None:
    source = csv_source(tmp_path, "age,city,score\n30,paris,0.5\n,rome,0\n50,paris,nan\n")

    statistics = statistics_proto(compute_statistics(source, CONFIG), CONFIG, name="file")

    age, city, score = (_feature(statistics, name) for name in ("age", "city", "score"))
    assert statistics.datasets[0].num_examples == 3
    assert age.type == statistics_pb2.FeatureNameStatistics.INT
    assert age.num_stats.common_stats.num_missing == 1
    assert age.num_stats.mean == pytest.approx(40.0)
    assert age.num_stats.std_dev == pytest.approx(10.0)
    assert (age.num_stats.min, age.num_stats.max) == (30, 50)
    assert score.num_stats.num_zeros == 1
    assert score.num_stats.histograms[0].num_nan == 1
    assert city.string_stats.unique == 2
    assert city.string_stats.top_values[0].value == "paris"
    assert city.string_stats.top_values[0].frequency == 2
    assert city.string_stats.avg_length == pytest.approx(14 / 3)


def test_statistics_survive_serialisation_as_tfmd_protos(tmp_path: Path) -> None:
    source = csv_source(tmp_path, "a,b\n1,x\n2,y\n3,x\n")
    written = statistics_proto(compute_statistics(source, CONFIG), CONFIG, name="file")

    parsed = statistics_pb2.DatasetFeatureStatisticsList.FromString(written.SerializeToString())

    assert parsed == written
    assert summary_of_statistics(parsed).features["b"].presence.num_non_missing == 3


def test_quantiles_and_standard_histogram_of_integers_are_exact() -> None:
    summary = summary_of({"n": list(range(100))})

    feature = _feature(statistics_proto(summary, CONFIG, name="x"), "n")

    standard = feature.num_stats.histograms[0]
    assert [bucket.sample_count for bucket in standard.buckets] == pytest.approx([10.0] * 10, abs=1)
    assert feature.num_stats.median == pytest.approx(49.5, abs=1)


def _random_columns(seed: int, rows: int) -> dict[str, list[object]]:
    generator = random.Random(seed)
    return {
        "amount": [generator.gauss(100 * seed, 30) for _ in range(rows)],
        "count": [
            generator.randint(-5, 50) if generator.random() > 0.1 else None for _ in range(rows)
        ],
        "city": [generator.choice(["a", "b", "c", f"s{seed}"]) for _ in range(rows)],
    }


def _assert_same(
    left: statistics_pb2.DatasetFeatureStatisticsList,
    right: statistics_pb2.DatasetFeatureStatisticsList,
) -> None:
    a, b = left.datasets[0], right.datasets[0]
    assert a.num_examples == b.num_examples
    for feature in a.features:
        other = _feature(right, feature.path.step[0])
        if feature.HasField("num_stats"):
            x, y = feature.num_stats, other.num_stats
            assert x.common_stats == y.common_stats
            assert (x.min, x.max, x.num_zeros) == (y.min, y.max, y.num_zeros)
            assert x.mean == pytest.approx(y.mean, rel=1e-12)
            assert x.std_dev == pytest.approx(y.std_dev, rel=1e-9)
            assert list(x.histograms) == list(y.histograms)
            assert list(feature.custom_stats) == list(other.custom_stats)
        else:
            assert feature.string_stats == other.string_stats


def test_merge_of_two_files_equals_statistics_of_their_concatenation() -> None:
    first, second = _random_columns(1, 700), _random_columns(2, 500)
    both = {name: first[name] + second[name] for name in first}

    merged = merge_statistics(
        statistics_proto(summary_of(first), CONFIG, name="a"),
        statistics_proto(summary_of(second), CONFIG, name="b"),
        CONFIG,
        name="all",
    )

    _assert_same(merged, statistics_proto(summary_of(both), CONFIG, name="all"))


def test_batched_statistics_equal_single_batch_statistics() -> None:
    columns = _random_columns(3, 2000)

    batched = statistics_proto(summary_of(columns, batch_rows=97), CONFIG, name="x")

    _assert_same(batched, statistics_proto(summary_of(columns), CONFIG, name="x"))


def test_merge_counts_a_feature_absent_from_one_side_as_missing() -> None:
    merged = summary_of({"a": [1, 2]}).merged(summary_of({"b": ["x", "y", "z"]}), 100)

    assert merged.num_examples == 5
    assert merged.features["a"].presence.num_missing == 3
    assert merged.features["b"].presence.num_missing == 2


def test_value_counts_past_the_limit_keep_the_most_frequent_and_say_so() -> None:
    config = ValidationConfig(max_tracked_values=10)
    values = [f"v{index}" for index in range(50)] + ["common"] * 20

    summary = summary_of({"s": values}, config)

    strings = summary.features["s"].strings
    assert strings is not None
    assert strings.truncated
    assert strings.value_counts(10)[0] == ("common", 20)
    assert len(strings.value_counts(10)) == 10


def test_nan_and_infinities_are_counted_apart_from_finite_values() -> None:
    summary = summary_of({"x": [1.0, math.nan, math.inf, -math.inf, 3.0]})

    numeric = summary.features["x"].numeric
    assert numeric is not None
    assert (numeric.count, numeric.nan, numeric.inf) == (2, 1, 2)
    assert numeric.mean == pytest.approx(2.0)


def test_list_values_give_value_counts() -> None:
    summary = summary_of({"tags": [["a", "b"], ["c"], None, ["a", "b", "c"]]})

    presence = summary.features["tags"].presence
    assert (presence.num_non_missing, presence.num_missing) == (3, 1)
    assert (presence.min_num_values, presence.max_num_values, presence.tot_num_values) == (1, 3, 6)


def test_integer_column_widens_to_float_mid_file(tmp_path: Path) -> None:
    rows = "".join(f"{index}\n" for index in range(20000)) + "2.5\n"
    source = csv_source(tmp_path, "x\n" + rows)

    summary = compute_statistics(source, ValidationConfig(read_block_bytes=64 * 1024))

    assert summary.features["x"].kind.value == "float"
    assert summary.num_examples == 20001


def test_gzip_and_ndjson_and_parquet_give_the_same_counts(tmp_path: Path) -> None:
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_text = "a,b\n1,x\n2,y\n"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), tmp_path / "data.parquet")
    sources = [
        csv_source(tmp_path, gzip.compress(csv_text.encode()), "data.csv.gz"),
        csv_source(tmp_path, '{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n', "data.jsonl"),
        csv_source(tmp_path, (tmp_path / "data.parquet").read_bytes(), "data.parquet"),
    ]

    summaries = [compute_statistics(source, CONFIG) for source in sources]

    assert {summary.num_examples for summary in summaries} == {2}
    assert {summary.features["b"].kind.value for summary in summaries} == {"string"}


@pytest.mark.parametrize("values", [[0.0], [0.0, 0.0, -0.0], [5e-324, 0.0, 1e-310]])
def test_a_float_column_of_zeros_or_subnormals_is_summarised_and_merges(
    values: list[float],
) -> None:
    """2**-scale must stay a finite double: an all-zero float column (a file or a batch
    of one) once overflowed computing its histogram."""
    summary = summary_of({"x": values})
    numeric = summary.features["x"].numeric
    assert numeric is not None
    assert numeric.count == len(values)

    merged = summary.merged(summary_of({"x": [1.5, 2.5]}), 100).features["x"].numeric
    whole = summary_of({"x": [*values, 1.5, 2.5]}).features["x"].numeric

    assert merged is not None
    assert whole is not None
    assert merged.histogram == whole.histogram
    assert (merged.count, merged.zeros, merged.minimum, merged.maximum) == (
        whole.count,
        whole.zeros,
        whole.minimum,
        whole.maximum,
    )
    assert merged.mean == pytest.approx(whole.mean)
