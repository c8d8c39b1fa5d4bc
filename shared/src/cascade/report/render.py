"""A ``RunReport`` as one self-contained HTML page.

Jinja2 with autoescaping always on (every string in a report may come from data that
anyone who can upload a file controls) and ``StrictUndefined`` (a template typo fails
the tests instead of printing nothing). The template ships as package data in
``cascade/report/templates/``; CSS and charts are inline, so the file opens offline.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import jinja2

from cascade.report.page_model import RunReport
from cascade.report.serving_plan import format_bytes

__all__ = ["TEMPLATE_NAME", "render_html"]

TEMPLATE_NAME = "run_report.html.j2"
_MISSING = "—"


def _number(value: float | None) -> str:
    return _MISSING if value is None else f"{value:.4g}"


def _signed(value: float | None) -> str:
    return _MISSING if value is None else f"{value:+.4g}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f} s"


def _thousands(value: int | None) -> str:
    return _MISSING if value is None else f"{value:,}"


def _percent(value: float | None) -> str:
    return _MISSING if value is None else f"{value:.1%}"


def _size(value: int | None) -> str:
    return _MISSING if value is None else format_bytes(value)


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    moment = value.astimezone(UTC) if value.tzinfo is not None else value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cascade.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        num=_number,
        signed=_signed,
        seconds=_seconds,
        when=_when,
        thousands=_thousands,
        percent=_percent,
        size=_size,
    )
    return environment


def render_template(name: str, **values: object) -> str:
    """Render one of the package's templates; every value from data is HTML-escaped."""
    return _environment().get_template(name).render(**values)


def render_html(report: RunReport) -> str:
    """The page of ``report``; every value from data is HTML-escaped."""
    return _environment().get_template(TEMPLATE_NAME).render(report=report)
