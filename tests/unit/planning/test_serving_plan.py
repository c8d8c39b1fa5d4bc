"""The serving advisor (cascade.serving.plan), its plot and the serving-plan command's
printing: the issue's three key distributions, then hostile inputs."""

from __future__ import annotations

import bisect
import itertools
import json
import random
import xml.etree.ElementTree as ElementTree
from collections import Counter
from functools import cache

import pytest
from rich.console import Console

from cascade.cli.serving_plan import print_plan
from cascade.report.serving_plan_chart import render_svg
from cascade.serving.plan import (
    Assumptions,
    NoRequestsError,
    advise,
    chao1,
    coverage_curve,
    key_counts,
)

KEYSPACE = 1_000_000


@cache
def _zipf_cumulative(exponent: float, keys: int) -> tuple[float, ...]:
    return tuple(itertools.accumulate(1 / rank**exponent for rank in range(1, keys + 1)))


def zipf_counts(
    requests: int, *, exponent: float = 1.1, keys: int = KEYSPACE, seed: int = 0
) -> Counter[str]:
    cumulative = _zipf_cumulative(exponent, keys)
    rng = random.Random(seed)
    total = cumulative[-1]
    return Counter(
        f"user-{bisect.bisect_left(cumulative, rng.random() * total)}" for _ in range(requests)
    )


def uniform_counts(requests: int, *, keys: int = KEYSPACE, seed: int = 0) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(f"user-{rng.randrange(keys)}" for _ in range(requests))


# -- the three distributions ------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_twenty_distinct_keys_are_served_static(seed: int) -> None:
    rng = random.Random(seed)
    plan = advise(Counter(f"store-{rng.randrange(20)}" for _ in range(50_000)))
    assert plan.mode == "static"
    assert plan.cardinality == 20
    assert plan.distinct_keys == 20
    assert plan.head_keys == 20
    assert plan.head_share == 1.0
    static = plan.cost("static")
    assert static.model_share == 0.0
    assert static.storage_bytes == 20 * plan.assumptions.bytes_per_answer
    assert static.p50_latency_ms == plan.assumptions.lookup_ms


@pytest.mark.parametrize("seed", [0, 1])
def test_zipf_1_1_over_many_keys_is_served_hybrid(seed: int) -> None:
    counts = zipf_counts(200_000, seed=seed)
    plan = advise(counts, window_s=3600.0)
    assert plan.mode == "hybrid", plan.reason
    assert plan.cardinality > plan.assumptions.static_max_keys
    # the head is small and covers the target share, no key more than needed
    ranked = sorted(counts.values(), reverse=True)
    total = sum(ranked)
    assert sum(ranked[: plan.head_keys]) >= 0.8 * total > sum(ranked[: plan.head_keys - 1])
    assert plan.head_keys < 0.05 * plan.cardinality
    hybrid = plan.cost("hybrid")
    assert hybrid.precomputed_keys == plan.head_keys
    assert hybrid.model_share == pytest.approx(1 - plan.head_share)
    assert hybrid.model_calls_per_s == pytest.approx(total / 3600.0 * hybrid.model_share)
    dynamic = plan.cost("dynamic")
    assert hybrid.p50_latency_ms < dynamic.p50_latency_ms
    assert hybrid.cpu_cores is not None
    assert dynamic.cpu_cores is not None
    assert hybrid.cpu_cores < dynamic.cpu_cores


def test_zipf_with_the_datasets_statistics_needs_fewer_requests() -> None:
    """A small sample underestimates the keyspace; the dataset's count corrects it."""
    counts = zipf_counts(50_000, seed=3)
    assert advise(counts).mode == "static"  # the log alone: ~65k keys look few
    plan = advise(counts, statistics_keys=KEYSPACE)
    assert plan.mode == "hybrid"
    assert plan.cardinality == KEYSPACE
    assert plan.cardinality_source == "the dataset's statistics"


@pytest.mark.parametrize("seed", [0, 1])
def test_uniform_over_many_keys_is_served_dynamic(seed: int) -> None:
    plan = advise(uniform_counts(100_000, seed=seed), window_s=60.0)
    assert plan.mode == "dynamic", plan.reason
    # the log saw < 100k keys; Chao1 tells the keyspace is far larger
    assert plan.distinct_keys < 100_000 < plan.cardinality
    assert plan.cardinality_source == "Chao1 estimate from the log"
    assert plan.head_keys == 0
    dynamic = plan.cost("dynamic")
    assert dynamic.model_share == 1.0
    assert dynamic.storage_bytes == 0
    assert dynamic.model_calls_per_s == pytest.approx(100_000 / 60.0)


def test_uniform_over_few_keys_is_static_even_with_flat_traffic() -> None:
    plan = advise(uniform_counts(100_000, keys=5_000))
    assert plan.mode == "static"


# -- the measures -------------------------------------------------------------------------


def test_peakedness_is_the_share_of_the_top_k_keys() -> None:
    counts = {"a": 50, "b": 30, "c": 10, "d": 5, "e": 5}
    plan = advise(counts)
    by_label = {coverage.label: coverage for coverage in plan.peakedness}
    assert by_label["top 1"].share == pytest.approx(0.5)
    assert by_label["top 10"].share == pytest.approx(1.0)
    assert [label for label in by_label if label.endswith("%")] == ["top 0.1%", "top 1%", "top 10%"]
    assert plan.top_keys[:2] == (("a", 50), ("b", 30))


def test_chao1() -> None:
    assert chao1([]) == 0
    assert chao1([5, 5, 5]) == 3  # nothing rare: what was seen is all
    assert chao1([1, 1, 2, 7]) == 4 + 2  # f1=2, f2=1: f1²/(2·f2) = 2
    assert chao1([1, 1, 1]) == 3 + 3  # no doubletons: f1(f1-1)/2


def test_coverage_curve_is_monotone_and_ends_at_all_requests() -> None:
    ordered = sorted(zipf_counts(20_000, keys=10_000).values(), reverse=True)
    curve = coverage_curve(ordered, sum(ordered))
    assert curve[0][0] == 1
    assert curve[-1] == (len(ordered), 1.0)
    assert [k for k, _ in curve] == sorted({k for k, _ in curve})
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(curve))
    assert len(curve) <= 66


def test_assumptions_are_overridable_and_change_the_answer() -> None:
    counts = uniform_counts(20_000, keys=5_000)
    assert advise(counts).mode == "static"
    stricter = Assumptions().with_overrides({"static_max_keys": "1000", "lookup_ms": "1.5"})
    assert stricter.static_max_keys == 1000
    assert stricter.lookup_ms == 1.5
    assert advise(counts, assumptions=stricter).mode == "dynamic"
    with pytest.raises(ValueError, match="unknown assumption 'latency'"):
        Assumptions().with_overrides({"latency": "3"})
    with pytest.raises(ValueError, match="not a number"):
        Assumptions().with_overrides({"model_ms": "fast"})
    with pytest.raises(ValueError, match=r"head_share_target must be in \(0, 1\]"):
        Assumptions(head_share_target=1.5)
    with pytest.raises(ValueError, match="lookup_ms"):
        Assumptions(lookup_ms=float("nan"))


# -- hostile inputs -----------------------------------------------------------------------


def test_an_empty_log_is_a_clear_error() -> None:
    for empty in ({}, [], {"a": 0}):
        with pytest.raises(NoRequestsError, match="no keyed requests"):
            advise(empty)


def test_one_key() -> None:
    plan = advise({"only": 7}, window_s=7.0)
    assert plan.mode == "static"
    assert plan.cardinality == 1
    assert plan.head_keys == 1
    assert plan.requests_per_s == 1.0
    assert plan.curve == ((1, 1.0),)


def test_huge_counts_stay_exact() -> None:
    huge = 10**18
    plan = advise({"a": huge, "b": huge, "c": 1})
    assert plan.requests == 2 * huge + 1
    assert plan.mode == "static"
    assert plan.peakedness[0].share == pytest.approx(0.5)


def test_keys_with_odd_characters_pass_through_untouched() -> None:
    odd = ['<script>alert("x")</script>', "new\nline", "tab\tand 'quote'", "ünï©ødé 🙂", "", "a,b"]
    plan = advise({key: index + 1 for index, key in enumerate(odd)})
    assert {key for key, _ in plan.top_keys} == set(odd)
    json.dumps(plan.as_dict())  # JSON-ready
    svg = render_svg(plan, '<ds&"x">')
    ElementTree.fromstring(svg)  # well-formed: names are escaped
    assert "<script>" not in svg
    assert '<ds&"x">' not in svg


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        advise({"a": -1})
    with pytest.raises(ValueError, match="not an integer"):
        advise({"a": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="not an integer"):
        advise({"a": True})
    with pytest.raises(ValueError, match="statistics_keys"):
        advise({"a": 1}, statistics_keys=-1)
    with pytest.raises(ValueError, match="window_s"):
        advise({"a": 1}, window_s=0.0)


def test_duplicate_pairs_are_merged() -> None:
    assert key_counts([("a", 1), ("b", 2), ("a", 3), ("c", 0)]) == {"a": 4, "b": 2}


# -- the plot and the table ---------------------------------------------------------------


def test_the_plot_marks_the_hybrid_head() -> None:
    plan = advise(zipf_counts(200_000))
    svg = render_svg(plan, "clicks")
    root = ElementTree.fromstring(svg)
    namespace = "{http://www.w3.org/2000/svg}"
    polyline = root.find(f"{namespace}polyline")
    assert polyline is not None
    assert len(polyline.attrib["points"].split()) == len(plan.curve)
    assert f"head: {plan.head_keys:,} keys" in svg
    assert "recommended: hybrid" in svg


def test_the_table_names_the_mode_and_every_cost() -> None:
    plan = advise(zipf_counts(200_000), window_s=600.0)
    console = Console(record=True, width=200)
    print_plan(plan, "clicks", console)
    text = console.export_text()
    assert "recommended hybrid" in text
    for mode in ("static", "hybrid ←", "dynamic"):
        assert mode in text
    assert "top 1%" in text
    assert "assumptions: bytes_per_answer=256" in text
