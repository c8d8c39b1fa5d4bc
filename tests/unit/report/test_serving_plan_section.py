"""The run report's serving plan section: the dataset's newest stored plan (its mode,
tables, window and plot), how to get one without it, and hostile strings in a stored
plan escaped in the page and in the plot."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunLedger, RunRecord
from cascade.report import collect_run_report, render_run_report
from cascade.report.serving_plan import (
    StoredServingPlan,
    format_bytes,
    save_serving_plan,
    serving_plan_due,
    serving_plan_path,
)
from cascade.serving.plan import Coverage, ServingPlan, advise
from cascade.serving.state import DeployedVersion, ServingState
from tests.unit.report.builders import DATASET, REJECTED_RUN_ID, RUN_ID, rejected_run

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>"


def _section(html: str) -> str:
    match = re.search(r'<section id="serving-plan">(.*?)</section>', html, re.DOTALL)
    assert match is not None
    return match.group(1)


def _svg(html: str) -> ElementTree.Element:
    """The plot in the page, parsed as XML (it must be well formed)."""
    match = re.search(r"<svg xmlns=.*?</svg>", _section(html), re.DOTALL)
    assert match is not None
    return ElementTree.fromstring(match.group(0))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _tags(html: str) -> list[str]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def _peaked_plan() -> ServingPlan:
    """A hybrid plan: 200,000 keys, the first 1,000 asked for 100 times each."""
    counts = {f"user-{index}": 100 if index < 1_000 else 1 for index in range(200_000)}
    plan = advise(counts, window_s=3600.0)
    assert plan.mode == "hybrid"
    return plan


def _stored(plan: ServingPlan, **fields: object) -> StoredServingPlan:
    values: dict[str, object] = {
        "dataset": DATASET,
        "endpoint": "projects/1/locations/us-central1/endpoints/42",
        "table": "cascade-local.cascade_serving_logs.request_response_logging",
        "key_field": "user",
        "start": NOW - timedelta(days=7),
        "end": NOW,
        "computed_at": NOW + timedelta(seconds=2),
        "unkeyed": 5,
        "plan": plan,
    }
    return StoredServingPlan.model_validate(values | fields)


@pytest.fixture
def rejected(tmp_path: Path) -> MemoryArtifactStore:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    rejected_run(artifacts, tmp_path)
    return artifacts


def _serving(artifacts: MemoryArtifactStore, traffic: dict[str, int]) -> None:
    """Version 1 of the dataset deployed (serving when it takes traffic), served static."""
    state = ServingState(
        dataset=DATASET,
        target="local",
        endpoint=DATASET,
        versions=[
            DeployedVersion(
                version="1",
                run_id="credit-deployed",
                model_uri="gs://cascade-artifacts/runs/credit-deployed/training/model",
                state="serving" if traffic else "standby",
                deployed_at=NOW,
            )
        ],
        traffic=traffic,
        updated_at=NOW,
        mode="static",
    )
    artifacts.write_json(DatasetPaths(DATASET).serving, state)


def test_without_a_stored_plan_the_section_says_how_to_get_one(
    rejected: MemoryArtifactStore,
) -> None:
    report = collect_run_report(rejected, REJECTED_RUN_ID)
    html = render_run_report(rejected, REJECTED_RUN_ID)

    section = report.serving_plan
    assert section is not None
    assert section.missing is not None
    assert "models/credit/serving-plan.json does not exist" in section.missing
    assert f"`cascade serving-plan {DATASET} --save`" in section.missing
    page = _section(html)
    assert f"cascade serving-plan {DATASET} --save" in page
    assert "<svg" not in page
    assert '<a href="#serving-plan">Serving plan</a>' in html


def test_a_stored_plan_shows_its_mode_tables_window_and_plot(
    rejected: MemoryArtifactStore,
) -> None:
    plan = _peaked_plan()
    save_serving_plan(rejected, _stored(plan))
    _serving(rejected, {"1": 100})

    report = collect_run_report(rejected, REJECTED_RUN_ID)
    html = render_run_report(rejected, REJECTED_RUN_ID)

    section = report.serving_plan
    assert section is not None
    assert section.missing is None
    assert (section.mode, section.serving_mode) == ("hybrid", "static")
    assert section.uri == "gs://cascade-artifacts/models/credit/serving-plan.json"
    assert [(row.label, row.share) for row in section.peakedness] == [
        (item.label, item.share) for item in plan.peakedness
    ]
    assert [(row.mode, row.recommended) for row in section.costs] == [
        ("static", False),
        ("hybrid", True),
        ("dynamic", False),
    ]
    page = _section(html)
    assert "Recommended: <strong>hybrid</strong> (served static now)." in page
    assert "the top 1% of keys take" in page  # the advisor's reason
    assert (
        "computed 2026-11-30 12:00:02 UTC from the request log from 2026-11-23 12:00:00 UTC "
        "to 2026-11-30 12:00:00 UTC"
    ) in page
    assert (
        "<tr><th>endpoint</th><td>projects/1/locations/us-central1/endpoints/42</td></tr>" in page
    )
    assert "<tr><th>key field</th><td>user</td></tr>" in page
    assert "(and 5 instances without the key field)" in page
    top_1 = next(item for item in plan.peakedness if item.label == "top 1%")
    assert (
        f'<tr><td>top 1%</td><td class="num">{top_1.keys:,}</td>'
        f'<td class="num">{top_1.share:.1%}</td></tr>'
    ) in page
    hybrid = plan.cost("hybrid")
    assert '<tr class="this-run"><td>hybrid (recommended)</td>' in page
    assert f'<td class="num">{hybrid.precomputed_keys:,}</td>' in page
    assert f'<td class="num">{format_bytes(hybrid.storage_bytes)}</td>' in page
    assert format_bytes(hybrid.storage_bytes).endswith(" MB")
    assert f"{hybrid.mean_latency_ms:.1f} ms" in page
    assert "assumptions: bytes_per_answer=256" in page
    svg = _svg(html)
    polyline = svg.find(f"{SVG}polyline")
    assert polyline is not None
    assert len(polyline.attrib["points"].split()) == len(plan.curve)
    assert f"head: {plan.head_keys:,} keys" in page


def test_hostile_strings_in_a_stored_plan_are_escaped_in_the_page_and_the_plot(
    rejected: MemoryArtifactStore,
) -> None:
    plan = _peaked_plan()
    plan = dataclasses.replace(
        plan,
        reason=f"because {HOSTILE}",
        cardinality_source=HOSTILE,
        peakedness=(Coverage(HOSTILE, 1, 0.5), *plan.peakedness[1:]),
    )
    stored = _stored(plan, dataset=HOSTILE, endpoint=f'"><{HOSTILE}', table=HOSTILE)
    # Not a dataset name, so save_serving_plan would refuse it; a tampered object can hold it.
    rejected.write_json(serving_plan_path(DATASET), stored)

    html = render_run_report(rejected, REJECTED_RUN_ID)

    assert HOSTILE not in html
    assert "<script" not in html
    assert "script" not in _tags(html)
    page = _section(html)
    assert "<tr><th>dataset</th><td>&lt;script&gt;alert(1)&lt;/script&gt;</td></tr>" in page
    assert "&#34;&gt;&lt;&lt;script&gt;" in page  # the endpoint, quotes and all
    assert "because &lt;script&gt;" in page
    svg = _svg(html)  # well formed: the dataset is escaped in the plot too
    title = svg.find(f"{SVG}title")
    assert title is not None
    assert title.text == f"Serving plan for {HOSTILE}: hybrid"


def test_a_corrupt_stored_plan_is_described_not_raised(rejected: MemoryArtifactStore) -> None:
    rejected.write(serving_plan_path(DATASET), b'{"dataset": "credit", "plan": {"mode": "x"}}')

    section = collect_run_report(rejected, REJECTED_RUN_ID).serving_plan

    assert section is not None
    assert section.missing is not None
    assert "is not a valid StoredServingPlan" in section.missing
    assert f"cascade serving-plan {DATASET} --save" in section.missing


@pytest.mark.parametrize("stored", [True, False])
def test_the_note_says_why_the_plan_was_not_refreshed(
    rejected: MemoryArtifactStore, stored: bool
) -> None:
    if stored:
        save_serving_plan(rejected, _stored(advise({"a": 2, "b": 1})))
    note = "No fresh serving plan for this report: <no BigQuery>"

    html = render_run_report(rejected, REJECTED_RUN_ID, serving_plan_note=note)

    page = _section(html)
    assert page.index("No fresh serving plan for this report: &lt;no BigQuery&gt;") < page.index(
        "Recommended" if stored else "cascade serving-plan"
    )
    assert ("<svg" in page) is stored


def test_a_plan_is_due_when_the_run_deployed_or_a_version_of_the_dataset_serves(
    rejected: MemoryArtifactStore,
) -> None:
    record = RunLedger(rejected).get(REJECTED_RUN_ID)
    assert record is not None
    assert not serving_plan_due(rejected, record)
    _serving(rejected, {})  # deployed, but no version takes traffic
    assert not serving_plan_due(rejected, record)
    _serving(rejected, {"1": 100})
    assert serving_plan_due(rejected, record)
    rejected.delete(DatasetPaths(DATASET).serving)
    deployed = RunRecord.model_validate(
        record.model_dump()
        | {
            "run_id": RUN_ID,
            "steps": {
                "deploy": {
                    "state": "succeeded",
                    "attempts": 1,
                    "started_at": NOW,
                    "outputs": {"version": "2"},
                }
            },
        }
    )
    assert serving_plan_due(rejected, deployed)
