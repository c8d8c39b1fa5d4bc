"""The serving advisor's plot: the share of requests the top k keys cover (an SVG).

Drawn by hand in ``templates/serving_plan.svg.j2`` (no plotting dependency), autoescaped
like every report template: a dataset or key name can hold any character.
"""

from __future__ import annotations

import math
from functools import cache

import jinja2

from cascade.serving.plan import ServingPlan

__all__ = ["SVG_TEMPLATE", "render_svg"]

SVG_TEMPLATE = "serving_plan.svg.j2"
_WIDTH, _HEIGHT = 560, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 540, 30, 262


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cascade.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _x(k: int, largest: int) -> float:
    if largest <= 1:
        return float(_LEFT)
    return _LEFT + (_RIGHT - _LEFT) * math.log(max(k, 1)) / math.log(largest)


def _y(share: float) -> float:
    return _BOTTOM - (_BOTTOM - _TOP) * min(max(share, 0.0), 1.0)


def render_svg(plan: ServingPlan, dataset: str) -> str:
    """The coverage curve with the precomputed head marked."""
    largest = max((k for k, _ in plan.curve), default=1)
    points = " ".join(f"{_x(k, largest):.1f},{_y(share):.1f}" for k, share in plan.curve)
    x_ticks = []
    decade = 1
    while decade <= largest:
        x_ticks.append({"x": round(_x(decade, largest), 1), "label": f"{decade:,}"})
        decade *= 10
    y_ticks = [{"y": round(_y(s / 4), 1), "label": f"{s * 25}%"} for s in range(5)]
    head = None
    if plan.mode == "hybrid" and plan.head_keys:
        head = {
            "x": round(_x(plan.head_keys, largest), 1),
            "label": f"head: {plan.head_keys:,} keys, {plan.head_share:.0%}",
        }
    return (
        _environment()
        .get_template(SVG_TEMPLATE)
        .render(
            width=_WIDTH,
            height=_HEIGHT,
            left=_LEFT,
            right=_RIGHT,
            top=_TOP,
            bottom=_BOTTOM,
            dataset=dataset,
            mode=plan.mode,
            points=points,
            x_ticks=x_ticks,
            y_ticks=y_ticks,
            head=head,
        )
    )
