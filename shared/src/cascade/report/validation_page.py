"""The HTML validation report of a run: each feature old vs new, anomalies highlighted.

Rendered from ``templates/validation_page.html.j2`` by the run report's jinja2
environment (``cascade.report.render``), with autoescaping on, so feature names and
values from the data (which anyone who can upload a file controls) are always escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cascade.core.validation_config import Severity, ValidationConfig
from cascade.report.render import render_template
from cascade.validation.anomalies import ValidationResult
from cascade.validation.summaries import DatasetSummary, FeatureSummary, NumericSummary
from cascade.validation.validator import FileValidation

__all__ = ["VALIDATION_TEMPLATE_NAME", "render_report", "render_validation_page"]

VALIDATION_TEMPLATE_NAME = "validation_page.html.j2"

_BARS = 10
_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.RETRAIN: 1}
"""Errors first, then value skews, then the rest."""
_TOP_VALUES = 10


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
    return render_template(
        VALIDATION_TEMPLATE_NAME,
        source=source,
        run_id=run_id,
        verdict="accepted" if result.accepted else "rejected",
        examples=current.num_examples,
        errors=len(result.errors),
        value_skews=len(result.value_skews),
        warnings=len(result.warnings),
        findings=[
            {
                "severity": f.severity.value,
                "feature": f.feature,
                "short_description": f.short_description,
                "description": f.description,
            }
            for f in sorted(result.findings, key=lambda f: _SEVERITY_ORDER.get(f.severity, 2))
        ],
        drift=result.drift,
        features=features,
    )


def render_validation_page(
    validation: FileValidation, *, run_id: str, config: ValidationConfig
) -> str:
    """The validation page of one validated file (``runs/<run_id>/validation/report.html``)."""
    return render_report(
        source=validation.source_uri,
        run_id=run_id,
        current=validation.summary,
        baseline=validation.baseline_summary,
        result=validation.result,
        config=config,
    )
