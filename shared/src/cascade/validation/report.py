"""The HTML validation report of a run: each feature old vs new, anomalies highlighted.

Rendered with jinja2 with autoescaping on, so feature names and values from the data
(which anyone who can upload a file controls) are always HTML-escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jinja2

from cascade.validation.anomalies import ValidationResult
from cascade.validation.config import Severity, ValidationConfig
from cascade.validation.summaries import DatasetSummary, FeatureSummary, NumericSummary

__all__ = ["render_report"]

_BARS = 10
_TOP_VALUES = 10

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Validation of {{ source }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem}
.error{background:#fde2e1}.warning{background:#fff4d6}.verdict-rejected{color:#b00020}
.verdict-accepted{color:#1b7f3b}.bar{display:inline-block;height:.7rem}
.old{background:#9aa5b1}.new{background:#3b82f6}.feature-error h3{color:#b00020}
</style></head><body>
<h1>Validation report</h1>
<p>Source: <code>{{ source }}</code> &middot; run <code>{{ run_id }}</code></p>
<h2 class="verdict-{{ verdict }}">{{ verdict | upper }}: {{ examples }} examples,
{{ errors }} error(s), {{ warnings }} warning(s)</h2>
{% if findings %}<table>
<tr><th>Severity</th><th>Feature</th><th>Anomaly</th><th>Description</th></tr>
{% for f in findings %}<tr class="{{ f.severity }}"><td>{{ f.severity }}</td>
<td>{{ f.feature or "(dataset)" }}</td><td>{{ f.short_description }}</td>
<td>{{ f.description }}</td></tr>
{% endfor %}</table>{% else %}<p>No anomalies.</p>{% endif %}
{% if drift %}<h2>Drift</h2><table>
<tr><th>Feature</th><th>Measure</th><th>Value</th><th>Threshold</th></tr>
{% for d in drift %}<tr class="{{ 'error' if d.exceeded else '' }}"><td>{{ d.feature }}</td>
<td>{{ d.measure }}</td><td>{{ '%.4g' % d.value }}</td><td>{{ '%.4g' % d.threshold }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Features</h2>
{% for v in features %}<section class="{{ 'feature-error' if v.flagged else '' }}">
<h3>{{ v.name }} <small>({{ v.kind }})</small></h3>
<table><tr><th></th><th>baseline</th><th>this file</th></tr>
{% for row in v.rows %}<tr><td>{{ row[0] }}</td><td>{{ row[1] }}</td><td>{{ row[2] }}</td></tr>
{% endfor %}</table>
{% if v.bars %}<table><tr><th>{{ v.bar_label }}</th><th>baseline</th><th>this file</th></tr>
{% for label, old, new in v.bars %}<tr><td>{{ label }}</td>
<td><span class="bar old" style="width:{{ (old * 200) | round(1) }}px"></span>
{{ '%.1f' % (old * 100) }}%</td>
<td><span class="bar new" style="width:{{ (new * 200) | round(1) }}px"></span>
{{ '%.1f' % (new * 100) }}%</td></tr>
{% endfor %}</table>{% endif %}</section>
{% endfor %}</body></html>
"""

_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


@dataclass
class _FeatureView:
    name: str
    kind: str
    flagged: bool
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    bar_label: str = ""
    bars: list[tuple[str, float, float]] = field(default_factory=list)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _numeric_rows(old: NumericSummary | None, new: NumericSummary) -> list[tuple[str, str, str]]:
    def pick(summary: NumericSummary | None, attribute: str) -> str:
        if summary is None or not summary.count:
            return ""
        return _fmt(float(getattr(summary, attribute)))

    return [
        (label, pick(old, attribute), pick(new, attribute))
        for label, attribute in (
            ("mean", "mean"),
            ("std dev", "std_dev"),
            ("min", "minimum"),
            ("max", "maximum"),
            ("zeros", "zeros"),
            ("NaN", "nan"),
            ("Inf", "inf"),
        )
    ]


def _numeric_bars(
    old: NumericSummary | None, new: NumericSummary
) -> list[tuple[str, float, float]]:
    """Shares in equal-width bins over the range both summaries cover."""
    sides = [summary for summary in (old, new) if summary is not None and summary.count]
    if not sides:
        return []
    low = min(summary.minimum for summary in sides)
    high = max(summary.maximum for summary in sides)
    width = (high - low) / _BARS
    boundaries = [low + width * index for index in range(1, _BARS)] if width > 0 else []
    edges = [low, *boundaries, high]

    def shares(summary: NumericSummary | None) -> list[float]:
        if summary is None or not summary.count:
            return [0.0] * (len(boundaries) + 1)
        masses = summary.histogram.masses(boundaries, summary.minimum, summary.maximum)
        return [mass / summary.count for mass in masses]

    labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in range(len(edges) - 1)]
    return list(zip(labels, shares(old), shares(new), strict=True))


def _string_bars(
    old: FeatureSummary | None, new: FeatureSummary, max_values: int
) -> list[tuple[str, float, float]]:
    def shares(feature: FeatureSummary | None) -> dict[str, float]:
        if feature is None or feature.strings is None:
            return {}
        counts = feature.strings.value_counts(max_values)
        total = sum(count for _, count in counts) or 1
        return {value: count / total for value, count in counts}

    old_shares, new_shares = shares(old), shares(new)
    ranked = sorted(
        set(old_shares) | set(new_shares),
        key=lambda value: -max(old_shares.get(value, 0), new_shares.get(value, 0)),
    )
    return [
        (value, old_shares.get(value, 0.0), new_shares.get(value, 0.0))
        for value in ranked[:_TOP_VALUES]
    ]


def _feature_view(
    name: str,
    new: FeatureSummary,
    old: FeatureSummary | None,
    examples: tuple[int, int],
    flagged: bool,
    config: ValidationConfig,
) -> _FeatureView:
    view = _FeatureView(name=name, kind=new.kind.value, flagged=flagged)
    old_examples, new_examples = examples
    old_present = (
        ""
        if old is None or not old_examples
        else (f"{old.presence.num_non_missing / old_examples:.1%}")
    )
    new_present = f"{new.presence.num_non_missing / new_examples:.1%}" if new_examples else ""
    view.rows.append(("present in", old_present, new_present))
    if new.numeric is not None:
        previous = old.numeric if old is not None else None
        view.rows.extend(_numeric_rows(previous, new.numeric))
        view.bar_label, view.bars = "range", _numeric_bars(previous, new.numeric)
    elif new.strings is not None:
        view.bar_label, view.bars = "value", _string_bars(old, new, config.max_tracked_values)
    return view


def render_report(
    *,
    source: str,
    run_id: str,
    current: DatasetSummary,
    baseline: DatasetSummary | None,
    result: ValidationResult,
    config: ValidationConfig,
) -> str:
    """The report as one self-contained HTML page."""
    flagged = {finding.feature for finding in result.findings}
    old_examples = baseline.num_examples if baseline is not None else 0
    features = [
        _feature_view(
            name,
            feature,
            baseline.features.get(name) if baseline is not None else None,
            (old_examples, current.num_examples),
            name in flagged,
            config,
        )
        for name, feature in current.features.items()
    ]
    template = _ENVIRONMENT.from_string(_TEMPLATE)
    return template.render(
        source=source,
        run_id=run_id,
        verdict="accepted" if result.accepted else "rejected",
        examples=current.num_examples,
        errors=len(result.errors),
        warnings=len(result.warnings),
        findings=[
            {
                "severity": f.severity.value,
                "feature": f.feature,
                "short_description": f.short_description,
                "description": f.description,
            }
            for f in sorted(result.findings, key=lambda f: f.severity is not Severity.ERROR)
        ],
        drift=result.drift,
        features=features,
    )
