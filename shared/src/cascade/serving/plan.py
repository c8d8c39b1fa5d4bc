"""The serving advisor: from the keys requests asked for, which serving mode fits.

Two properties of the traffic decide the design (issue 16):

- **cardinality** — how many distinct keys exist. The request log only shows the keys
  that were asked for, so it is estimated: the largest of the distinct keys seen, the
  dataset's own count (its statistics, when given) and the Chao1 estimate from the log
  (``seen + f1² / (2·f2)``, ``f1``/``f2`` the keys seen once/twice), which tells a
  uniform stream over a million keys from one over the few thousand it happened to
  touch;
- **peakedness** — the share of requests the most requested keys cover, for fixed k
  (1, 10, 100, …) and for fractions of the cardinality (0.1 %, 1 %, 10 %).

The rule (``advise``):

1. cardinality ≤ ``static_max_keys`` → **static**: precompute every key, look answers up;
2. else the top 1 % of keys cover ≥ ``peaked_share`` of requests → **hybrid**: precompute
   the smallest head that covers ``head_share_target`` of requests, the model answers
   the tail;
3. else → **dynamic**: every request goes to the model.

Each mode's expected cost comes with it: storage (precomputed rows x bytes per answer),
CPU (model calls per second: all requests, the tail's, or none) and latency (a lookup,
the model, or the mix). The numbers behind them are ``Assumptions``, documented and
overridable; they are estimates to compare modes, not measurements.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

__all__ = [
    "FIXED_K",
    "KEY_FRACTIONS",
    "Assumptions",
    "Coverage",
    "Mode",
    "ModeCost",
    "NoRequestsError",
    "ServingPlan",
    "advise",
    "chao1",
    "coverage_curve",
    "key_counts",
]

Mode = Literal["static", "dynamic", "hybrid"]
MODES: tuple[Mode, ...] = ("static", "hybrid", "dynamic")

FIXED_K = (1, 10, 100, 1_000, 10_000, 100_000)
"""Peakedness at these head sizes: the share of requests the top k keys cover."""

KEY_FRACTIONS = (0.001, 0.01, 0.1)
"""Peakedness at these fractions of the cardinality (0.1 %, 1 %, 10 % of the keys)."""

PEAK_FRACTION = 0.01
"""The fraction of the keys whose share of requests decides "peaked" (the top 1 %)."""

_CURVE_POINTS = 64


class NoRequestsError(ValueError):
    """The log holds no keyed request: there is no traffic to plan for."""


@dataclass(frozen=True)
class Assumptions:
    """What the cost estimates assume; every field can be overridden (``--assume``).

    Latencies are medians of one answer, as seen by the model server: a point read of
    the lookup store (Cloud Bigtable answers single-row reads in single-digit
    milliseconds) and one online prediction of a small model (TF Serving on CPU, tens of
    milliseconds with its batching). Measure yours with ``bench/serving_modes.py``.
    """

    bytes_per_answer: int = 256
    """One precomputed row in the lookup store: key, prediction, model version, time."""
    lookup_ms: float = 3.0
    """Median latency of one lookup in the store (hit or miss)."""
    model_ms: float = 25.0
    """Median latency of one model prediction (the dynamic path)."""
    model_cpu_ms: float = 5.0
    """CPU time one model prediction costs the serving nodes."""
    static_max_keys: int = 100_000
    """At or below this cardinality, precomputing every key is cheap: static."""
    peaked_share: float = 0.5
    """Traffic is peaked when the top 1 % of keys cover at least this share."""
    head_share_target: float = 0.8
    """Hybrid precomputes the smallest head covering this share of requests."""

    def __post_init__(self) -> None:
        for name in ("bytes_per_answer", "static_max_keys"):
            if getattr(self, name) < 0:
                raise ValueError(f"assumption {name} must be >= 0")
        for name in ("lookup_ms", "model_ms", "model_cpu_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"assumption {name} must be a finite number >= 0")
        for name in ("peaked_share", "head_share_target"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 < value <= 1:
                raise ValueError(f"assumption {name} must be in (0, 1]")

    def with_overrides(self, overrides: Mapping[str, str]) -> Assumptions:
        """These assumptions with ``name=value`` overrides (strings, as typed)."""
        kinds = {item.name: item.type for item in fields(self)}
        changes: dict[str, Any] = {}
        for name, raw in overrides.items():
            if name not in kinds:
                known = ", ".join(sorted(kinds))
                raise ValueError(f"unknown assumption {name!r} (known: {known})")
            try:
                changes[name] = int(raw) if kinds[name] in ("int", int) else float(raw)
            except ValueError:
                raise ValueError(f"assumption {name}: {raw!r} is not a number") from None
        return replace(self, **changes)


@dataclass(frozen=True)
class Coverage:
    """The top ``keys`` keys cover ``share`` of the requests; ``label`` names the k."""

    label: str
    keys: int
    share: float


@dataclass(frozen=True)
class ModeCost:
    """What one mode is expected to cost for this traffic."""

    mode: Mode
    precomputed_keys: int
    storage_bytes: int
    model_share: float
    """The share of requests the model answers (0 static, 1 dynamic, the tail hybrid)."""
    model_calls_per_s: float | None
    cpu_cores: float | None
    """CPU cores busy with model calls (calls/s x CPU per call); None without a rate."""
    mean_latency_ms: float
    p50_latency_ms: float


@dataclass(frozen=True)
class ServingPlan:
    """The advisor's answer: the traffic, the mode, the head, and every mode's cost."""

    mode: Mode
    reason: str
    requests: int
    distinct_keys: int
    """Distinct keys the log saw."""
    cardinality: int
    """The estimated distinct keys that exist (see the module doc)."""
    cardinality_source: str
    statistics_keys: int | None
    head_keys: int
    """Keys to precompute: all for static, the head for hybrid, 0 for dynamic."""
    head_share: float
    """The share of requests the precomputed keys cover."""
    peakedness: tuple[Coverage, ...]
    costs: tuple[ModeCost, ...]
    curve: tuple[tuple[int, float], ...]
    """(top k keys, share of requests) from k=1 to all seen keys, for the plot."""
    assumptions: Assumptions
    requests_per_s: float | None = None
    top_keys: tuple[tuple[str, int], ...] = field(default=())

    def cost(self, mode: Mode) -> ModeCost:
        return next(item for item in self.costs if item.mode == mode)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json``)."""
        data = asdict(self)
        data["top_keys"] = [{"key": key, "requests": count} for key, count in self.top_keys]
        data["curve"] = [{"keys": k, "share": share} for k, share in self.curve]
        return data


def key_counts(pairs: Iterable[tuple[str, int]] | Mapping[str, int]) -> dict[str, int]:
    """Merge ``(key, requests)`` pairs into one count per key; refuse negative or
    non-integer counts. Keys are kept exactly as given (any characters)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    merged: dict[str, int] = {}
    for key, count in items:
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"the count of key {key!r} is not an integer: {count!r}")
        if count < 0:
            raise ValueError(f"the count of key {key!r} is negative: {count}")
        if count:
            merged[key] = merged.get(key, 0) + count
    return merged


def chao1(counts: Iterable[int]) -> int:
    """Chao1's lower-bound estimate of the distinct keys that exist, from the counts of
    the keys seen (bias-corrected form when no key was seen twice)."""
    seen = f1 = f2 = 0
    for count in counts:
        if count <= 0:
            continue
        seen += 1
        f1 += count == 1
        f2 += count == 2
    extra = f1 * f1 / (2 * f2) if f2 > 0 else f1 * (f1 - 1) / 2
    return seen + math.ceil(extra)


def _prefix_sums(ordered: list[int]) -> list[int]:
    """Cumulative requests of the top k keys, k = 1..len(ordered)."""
    running, cumulative = 0, []
    for count in ordered:
        running += count
        cumulative.append(running)
    return cumulative


def coverage_curve(
    ordered: list[int], total: int, points: int = _CURVE_POINTS
) -> list[tuple[int, float]]:
    """(k, share covered by the top k) at about ``points`` k spread on a log scale."""
    if not ordered or total <= 0:
        return []
    cumulative = _prefix_sums(ordered)
    n = len(ordered)
    ks = {1, n}
    if n > 1:
        step = math.log(n) / max(points - 1, 1)
        ks.update(min(n, max(1, round(math.exp(i * step)))) for i in range(points))
    return [(k, cumulative[k - 1] / total) for k in sorted(ks)]


def _head_for(cumulative: list[int], total: int, target: float) -> int:
    """The smallest k whose top-k keys cover at least ``target`` of ``total``."""
    needed = target * total
    low, high = 0, len(cumulative) - 1
    while low < high:
        middle = (low + high) // 2
        if cumulative[middle] >= needed:
            high = middle
        else:
            low = middle + 1
    return low + 1


def _covered(cumulative: list[int], total: int, k: int) -> float:
    if k <= 0:
        return 0.0
    return cumulative[min(k, len(cumulative)) - 1] / total


def _percent(fraction: float) -> str:
    return f"top {fraction * 100:g}%"


def advise(
    counts: Iterable[tuple[str, int]] | Mapping[str, int],
    *,
    statistics_keys: int | None = None,
    window_s: float | None = None,
    assumptions: Assumptions | None = None,
    top: int = 10,
) -> ServingPlan:
    """The serving plan for this traffic.

    ``counts``: requests per key over the window (the request log). ``statistics_keys``:
    the key column's distinct count from the dataset's statistics (a lower bound when the
    statistics truncated it), or None. ``window_s``: the window's length, for rates.
    Raises ``NoRequestsError`` when no keyed request is there to plan for.
    """
    assume = assumptions or Assumptions()
    merged = key_counts(counts)
    total = sum(merged.values())
    if total == 0:
        raise NoRequestsError("no keyed requests in the log: nothing to plan for yet")
    if statistics_keys is not None and statistics_keys < 0:
        raise ValueError(f"statistics_keys must be >= 0, not {statistics_keys}")
    if window_s is not None and (not math.isfinite(window_s) or window_s <= 0):
        raise ValueError(f"window_s must be a positive number, not {window_s}")
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    ordered = [count for _, count in ranked]
    cumulative = _prefix_sums(ordered)
    seen = len(ordered)
    estimated = chao1(ordered)
    candidates = [
        (seen, "keys seen in the request log"),
        (estimated, "Chao1 estimate from the log"),
    ]
    if statistics_keys is not None:
        candidates.append((statistics_keys, "the dataset's statistics"))
    cardinality, source = max(candidates, key=lambda item: item[0])

    peakedness = [Coverage(f"top {k:,}", k, _covered(cumulative, total, k)) for k in FIXED_K]
    peakedness += [
        Coverage(
            _percent(f),
            max(1, math.ceil(f * cardinality)),
            _covered(cumulative, total, max(1, math.ceil(f * cardinality))),
        )
        for f in KEY_FRACTIONS
    ]
    top_share = _covered(cumulative, total, max(1, math.ceil(PEAK_FRACTION * cardinality)))
    head = _head_for(cumulative, total, assume.head_share_target)
    head_share = _covered(cumulative, total, head)
    rate = None if window_s is None else total / window_s

    # static serves from the store only: keys beyond those seen still need an answer
    static_keys = max(cardinality, seen)
    costs = (
        _cost("static", static_keys, 1.0, rate, assume),
        _cost("hybrid", head, head_share, rate, assume),
        _cost("dynamic", 0, 0.0, rate, assume),
    )
    if cardinality <= assume.static_max_keys:
        mode: Mode = "static"
        reason = (
            f"low cardinality: about {cardinality:,} keys (≤ {assume.static_max_keys:,}); "
            "precompute every key and look answers up"
        )
        head_keys, covered = static_keys, 1.0
    elif top_share >= assume.peaked_share:
        mode = "hybrid"
        reason = (
            f"high cardinality (about {cardinality:,} keys) with a peaked head: the top 1% "
            f"of keys take {top_share:.0%} of requests (≥ {assume.peaked_share:.0%}); "
            f"precompute the top {head:,} keys ({head_share:.0%} of requests), the model "
            "answers the tail"
        )
        head_keys, covered = head, head_share
    else:
        mode = "dynamic"
        reason = (
            f"high cardinality (about {cardinality:,} keys) and flat traffic: the top 1% "
            f"of keys take only {top_share:.0%} of requests (< {assume.peaked_share:.0%}); "
            "precomputing would store much and save little"
        )
        head_keys, covered = 0, 0.0
    return ServingPlan(
        mode=mode,
        reason=reason,
        requests=total,
        distinct_keys=seen,
        cardinality=cardinality,
        cardinality_source=source,
        statistics_keys=statistics_keys,
        head_keys=head_keys,
        head_share=covered,
        peakedness=tuple(peakedness),
        costs=costs,
        curve=tuple(coverage_curve(ordered, total)),
        assumptions=assume,
        requests_per_s=rate,
        top_keys=tuple(ranked[: max(top, 0)]),
    )


def _cost(
    mode: Mode, keys: int, hit_share: float, rate: float | None, assume: Assumptions
) -> ModeCost:
    """Expected cost of ``mode`` precomputing ``keys`` keys that answer ``hit_share``."""
    model_share = 0.0 if mode == "static" else 1.0 - hit_share
    if mode == "dynamic":
        mean = p50 = assume.model_ms
    elif mode == "static":
        mean = p50 = assume.lookup_ms
    else:  # a miss costs the lookup, then the model
        miss = assume.lookup_ms + assume.model_ms
        mean = hit_share * assume.lookup_ms + model_share * miss
        p50 = assume.lookup_ms if hit_share >= 0.5 else miss
    calls = None if rate is None else rate * model_share
    cores = None if calls is None else calls * assume.model_cpu_ms / 1000.0
    return ModeCost(
        mode=mode,
        precomputed_keys=keys,
        storage_bytes=keys * assume.bytes_per_answer,
        model_share=model_share,
        model_calls_per_s=calls,
        cpu_cores=cores,
        mean_latency_ms=mean,
        p50_latency_ms=p50,
    )
