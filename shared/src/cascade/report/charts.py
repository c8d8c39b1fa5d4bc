"""Charts as SVG geometry: shapes placed in pixels, drawn by the report's template.

Nothing here writes markup. Each function lays out one kind of chart as a ``SvgChart``
(rectangles, lines, polylines, dots and text with tooltips); the template turns the
shapes into inline ``<svg>`` elements with autoescaping, so labels that come from data
(feature names, category values) are escaped like every other string in the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Bar",
    "BarRow",
    "Dot",
    "Line",
    "Polyline",
    "Rect",
    "SvgChart",
    "Text",
    "horizontal_bar_chart",
    "line_chart",
    "stacked_bar_chart",
]

_CHAR_PX = 7.0
_MAX_LABEL_CHARS = 32
_ROW_GAP = 6
_BAR_AREA_PX = 300
_VALUE_AREA_PX = 70


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rect(_Shape):
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str = ""


class Line(_Shape):
    x1: float
    y1: float
    x2: float
    y2: float
    css: str
    title: str = ""


class Polyline(_Shape):
    points: str = Field(description="SVG points: 'x,y x,y ...', numbers only.")
    css: str


class Dot(_Shape):
    cx: float
    cy: float
    css: str
    title: str = ""


class Text(_Shape):
    x: float
    y: float
    text: str
    css: str = ""
    anchor: Literal["start", "middle", "end"] = "start"
    title: str = ""


class SvgChart(_Shape):
    """One chart; ``description`` is its accessible name (``aria-label``)."""

    width: float
    height: float
    description: str
    rects: list[Rect] = Field(default_factory=list)
    lines: list[Line] = Field(default_factory=list)
    polylines: list[Polyline] = Field(default_factory=list)
    dots: list[Dot] = Field(default_factory=list)
    texts: list[Text] = Field(default_factory=list)


@dataclass
class _Canvas:
    """Shapes collected while a chart is laid out."""

    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    polylines: list[Polyline] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)

    def chart(self, width: float, height: float, description: str) -> SvgChart:
        return SvgChart(
            width=width,
            height=height,
            description=description,
            rects=self.rects,
            lines=self.lines,
            polylines=self.polylines,
            dots=self.dots,
            texts=self.texts,
        )


class Bar(_Shape):
    """One bar of a row: its value (in the chart's units), CSS class and tooltip."""

    value: float
    css: str
    title: str = ""


class BarRow(_Shape):
    """A labelled row of bars side by side; ``marker`` draws a tick (a threshold)."""

    label: str
    bars: list[Bar]
    value_text: str = ""
    marker: float | None = None
    marker_title: str = ""


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL_CHARS else label[: _MAX_LABEL_CHARS - 1] + "…"


def _label_width(labels: Sequence[str]) -> float:
    longest = max((len(_short(label)) for label in labels), default=0)
    return min(longest, _MAX_LABEL_CHARS) * _CHAR_PX + 12


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def horizontal_bar_chart(
    rows: Sequence[BarRow],
    *,
    description: str,
    scale_max: float | None = None,
    bar_height: float = 14.0,
) -> SvgChart:
    """One row per ``BarRow``, bars scaled to ``scale_max`` (default: the largest value or
    marker, so a threshold is always on the chart)."""
    values = [bar.value for row in rows for bar in row.bars]
    values += [row.marker for row in rows if row.marker is not None]
    top = scale_max if scale_max is not None else max((v for v in values if v > 0), default=1.0)
    top = top if top > 0 else 1.0
    left = _label_width([row.label for row in rows])
    y = 4.0
    chart = _Canvas()
    for row in rows:
        row_height = bar_height * max(len(row.bars), 1)
        middle = y + row_height / 2
        chart.texts.append(
            Text(x=left - 6, y=middle + 4, text=_short(row.label), anchor="end", title=row.label)
        )
        for index, bar in enumerate(row.bars):
            width = max(min(bar.value / top, 1.0), 0.0) * _BAR_AREA_PX
            chart.rects.append(
                Rect(
                    x=left,
                    y=y + index * bar_height + 1,
                    width=round(width, 2),
                    height=bar_height - 2,
                    css=bar.css,
                    title=bar.title,
                )
            )
        if row.marker is not None:
            x = left + min(row.marker / top, 1.0) * _BAR_AREA_PX
            chart.lines.append(
                Line(
                    x1=round(x, 2),
                    y1=y - 2,
                    x2=round(x, 2),
                    y2=y + row_height + 2,
                    css="marker",
                    title=row.marker_title,
                )
            )
        if row.value_text:
            chart.texts.append(
                Text(x=left + _BAR_AREA_PX + 6, y=middle + 4, text=row.value_text, css="value")
            )
        y += row_height + _ROW_GAP
    return chart.chart(left + _BAR_AREA_PX + _VALUE_AREA_PX, y + 2, description)


def stacked_bar_chart(
    parts: Sequence[tuple[str, float, str]], *, description: str, total: float = 100.0
) -> SvgChart:
    """One bar split into ``(label, value, css)`` parts, each labelled inside its share."""
    width, height, x = 400.0, 28.0, 0.0
    chart = _Canvas()
    for label, value, css in parts:
        part_width = max(value, 0.0) / total * width if total else 0.0
        chart.rects.append(
            Rect(
                x=round(x, 2), y=0, width=round(part_width, 2), height=height, css=css, title=label
            )
        )
        if part_width >= len(label) * _CHAR_PX:
            chart.texts.append(
                Text(
                    x=round(x + part_width / 2, 2),
                    y=height / 2 + 4,
                    text=label,
                    css="inside",
                    anchor="middle",
                )
            )
        x += part_width
    return chart.chart(width, height, description)


def _y_range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if math.isclose(low, high):
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _x_ticks(epochs: int) -> list[int]:
    step = max(1, math.ceil(epochs / 10))
    ticks = list(range(1, epochs + 1, step))
    return ticks if ticks[-1] == epochs else [*ticks, epochs]


def line_chart(
    series: Sequence[tuple[str, Sequence[float | None]]], *, description: str, x_label: str
) -> SvgChart | None:
    """Lines over x = 1..n, one per ``(name, values)``; None values break a line.

    Returns None when no series has a finite value.
    """
    finite = [v for _, values in series for v in values if v is not None and math.isfinite(v)]
    points = max((len(values) for _, values in series), default=0)
    if not finite or not points:
        return None
    left, right, top, bottom, width, height = 56.0, 12.0, 22.0, 34.0, 460.0, 220.0
    low, high = _y_range(finite)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(index: int) -> float:
        return left + (plot_w * (index - 1) / (points - 1) if points > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    chart = _Canvas()
    chart.lines.append(Line(x1=left, y1=top, x2=left, y2=top + plot_h, css="axis"))
    chart.lines.append(
        Line(x1=left, y1=top + plot_h, x2=width - right, y2=top + plot_h, css="axis")
    )
    for value in (low, (low + high) / 2, high):
        y = round(y_of(value), 2)
        chart.lines.append(Line(x1=left, y1=y, x2=width - right, y2=y, css="grid"))
        chart.texts.append(Text(x=left - 4, y=y + 4, text=_fmt(value), css="tick", anchor="end"))
    for epoch in _x_ticks(points):
        x = round(x_of(epoch), 2)
        chart.texts.append(
            Text(x=x, y=top + plot_h + 14, text=str(epoch), css="tick", anchor="middle")
        )
    chart.texts.append(
        Text(x=left + plot_w / 2, y=height - 4, text=x_label, css="tick", anchor="middle")
    )
    for number, (name, values) in enumerate(series):
        css = f"series-{number % 4}"
        chart.texts.append(Text(x=left + 8 + number * 120, y=14, text=name, css=f"legend {css}"))
        _draw_series(chart, name, values, css, x_of, y_of)
    return chart.chart(width, height, description)


def _draw_series(
    chart: _Canvas,
    name: str,
    values: Sequence[float | None],
    css: str,
    x_of: Callable[[int], float],
    y_of: Callable[[float], float],
) -> None:
    segment: list[str] = []
    for index, value in enumerate(values, start=1):
        if value is None or not math.isfinite(value):
            _flush(chart, segment, css)
            segment = []
            continue
        x, y = round(x_of(index), 2), round(y_of(value), 2)
        segment.append(f"{x},{y}")
        chart.dots.append(Dot(cx=x, cy=y, css=css, title=f"{name}, epoch {index}: {_fmt(value)}"))
    _flush(chart, segment, css)


def _flush(chart: _Canvas, segment: list[str], css: str) -> None:
    if len(segment) > 1:
        chart.polylines.append(Polyline(points=" ".join(segment), css=css))
