"""The dataset page in headless Chromium, over the validate step's in-memory storage:
release of a quarantined file, the schema editor, the drift chart (uPlot, data from the
JSON endpoint) with a hostile feature name, pagination of files. Synchronised with
Playwright's ``expect`` (each with a deadline), never with sleeps."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from playwright.sync_api import Page, expect

from cascade.core.messages import DataValidated
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from cascade.steps.quarantine_review import read_review, release_run_id
from cascade.validation.schema_store import read_schema
from cascade.validation.tfmd import anomalies_pb2
from tests.console.conftest import DialogLog, screenshot
from tests.console.datasets_builders import (
    DATASET,
    LOCAL_USER,
    DatasetConsole,
    csv_rows,
    dataset_console,
)
from tests.console.server import serving

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert('y')>"
REASON = "new cities opened this quarter; checked with the data owner"


@pytest.fixture
def console() -> DatasetConsole:
    return dataset_console(page_size=2)


@pytest.fixture
def url(console: DatasetConsole) -> Iterator[str]:
    with serving(console.app) as base:
        yield base


@pytest.fixture
def quarantined(console: DatasetConsole) -> RunRecord:
    console.land(f"{DATASET}/day-1.csv", csv_rows(1))
    console.land(f"{DATASET}/day-2.csv", csv_rows(2, shift=2.0))
    run = console.land(f"{DATASET}/day-3.csv", csv_rows(3, shift=15.0, cities=("a", "b", "z")))
    assert run.state == "rejected"
    console.bus.published.clear()
    return run


def _script_count(page: Page) -> int:
    return int(page.evaluate("document.scripts.length"))


def test_a_quarantined_file_is_released_from_its_row_with_who_and_why(
    console: DatasetConsole, quarantined: RunRecord, url: str, page: Page, dialogs: DialogLog
) -> None:
    page.goto(f"{url}/datasets/{DATASET}#quarantined")
    row = page.locator(f'#quarantined-files tr[data-run-id="{quarantined.run_id}"]')
    expect(row.locator("td.findings")).to_contain_text("city")
    screenshot(page, "dataset-quarantine")

    form = row.locator("form.review-release")
    form.locator('input[name="reason"]').fill(REASON)
    form.locator("button").click()

    expect(page.locator("#dataset-notice")).to_have_text(
        f"Quarantined run {quarantined.run_id} released."
    )
    new_run = release_run_id(DATASET, quarantined.run_id)
    review_cell = page.locator(f'#quarantined-files tr[data-run-id="{quarantined.run_id}"] .review')
    expect(review_cell).to_contain_text(f"released by {LOCAL_USER} as run {new_run}: {REASON}")
    expect(review_cell.locator("form")).to_have_count(0)
    review = read_review(console.ctx, DATASET, quarantined.run_id)
    assert review is not None
    assert (review.actor, review.reason, review.via) == (LOCAL_USER, REASON, "console")
    [validated] = console.bus.of_type(DataValidated)
    assert validated.run_id == new_run
    record = console.ctx.ledger.get(quarantined.run_id)
    assert record is not None
    recorded = record.steps["review"].outputs["review"]
    assert (recorded["action"], recorded["actor"], recorded["reason"]) == (
        "release",
        LOCAL_USER,
        REASON,
    )

    page.goto(f"{url}/runs/{new_run}")
    expect(page.locator("#run-reason")).to_have_text(
        f"release of quarantined run {quarantined.run_id} by {LOCAL_USER}: {REASON}"
    )
    page.goto(f"{url}/runs/{quarantined.run_id}")
    expect(page.locator("table.timeline")).to_contain_text("review")
    assert dialogs.opened == []


def test_the_schema_editor_refuses_a_broken_schema_and_saves_a_good_one(
    console: DatasetConsole, quarantined: RunRecord, url: str, page: Page
) -> None:
    before = read_schema(console.ctx.artifacts, DATASET)
    assert before is not None
    page.goto(f"{url}/datasets/{DATASET}#schema")
    page.locator(".schema-editor summary").click()
    editor = page.locator("#schema-text")
    expect(editor).to_have_value(before.text)

    editor.fill(before.text.replace("type: INT", "type: INTEGER", 1))
    page.locator("#schema-reason").fill("age as a whole number")
    page.locator("#schema-save").click()

    expect(page.locator("#schema-error")).to_contain_text("INTEGER")
    expect(page.locator("#schema-error")).to_contain_text(re.compile(r"\d+:\d+ :"))
    expect(editor).to_have_value(re.compile("type: INTEGER"))  # the edit is kept
    unchanged = read_schema(console.ctx.artifacts, DATASET)
    assert unchanged is not None
    assert unchanged.generation == before.generation

    editor.fill(before.text.replace("min_fraction: 0.95", "min_fraction: 0.5", 1))
    page.locator("#schema-reason").fill("amounts may be missing")
    page.locator("#schema-save").click()

    expect(page.locator("#dataset-notice")).to_have_text("Schema saved.")
    amount = page.locator("#schema-table tr", has=page.locator("td.feature", has_text="amount"))
    expect(amount.locator("td").nth(2)).to_have_text("0.5")
    saved = read_schema(console.ctx.artifacts, DATASET)
    assert saved is not None
    assert f"Edited by {LOCAL_USER}" in saved.text
    assert "amounts may be missing" in saved.text


def _add_drift(console: DatasetConsole, run_id: str, feature: str, value: float) -> None:
    """Add a measurement of ``feature`` to the run's anomalies, as the validate step
    writes them (``drift_skew_info``)."""
    name = f"{RunPaths(run_id).step_dir('validation')}/anomalies.pbtxt"
    stored = console.ctx.artifacts.read(name)
    assert stored is not None
    anomalies = anomalies_pb2.Anomalies()
    text_format.Parse(stored.data.decode(), anomalies)
    info = anomalies.drift_skew_info.add()
    info.path.step.append(feature)
    measurement = info.drift_measurements.add()
    measurement.type = anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE
    measurement.value = value
    measurement.threshold = 0.1
    console.ctx.artifacts.write(name, text_format.MessageToString(anomalies).encode())


def test_the_drift_chart_draws_from_the_json_endpoint_and_shows_names_as_text(
    console: DatasetConsole, url: str, page: Page, dialogs: DialogLog
) -> None:
    console.land(f"{DATASET}/day-1.csv", csv_rows(1))
    second = console.land(f"{DATASET}/day-2.csv", csv_rows(2, shift=1.0))
    third = console.land(f"{DATASET}/day-3.csv", csv_rows(3, shift=4.0))
    _add_drift(console, second.run_id, HOSTILE, 0.05)
    _add_drift(console, third.run_id, HOSTILE, 0.2)

    page.goto(f"{url}/datasets/{DATASET}#drift")
    scripts = _script_count(page)
    chart = page.locator("#drift-chart")
    expect(chart.locator("canvas")).to_have_count(1)
    expect(chart).to_have_attribute("data-points", "2")
    # the first feature by name: the hostile one ("<" sorts first), shown as text
    expect(chart).to_have_attribute("data-feature", HOSTILE)
    expect(page.locator("#drift-feature")).to_have_text(HOSTILE)
    expect(page.locator("#drift-measure")).to_have_text("(Jensen-Shannon divergence)")
    expect(page.locator("#drift-feature-select option").first).to_have_text(HOSTILE)
    screenshot(page, "dataset-page")

    page.locator("#drift-feature-select").select_option("amount")

    expect(chart).to_have_attribute("data-feature", "amount")
    expect(page.locator("#drift-feature")).to_have_text("amount")
    expect(page.locator("#drift-measure")).to_have_text("(Kolmogorov-Smirnov statistic)")
    expect(chart.locator("canvas")).to_have_count(1)
    expect(chart).to_have_attribute("data-points", "2")
    assert _script_count(page) == scripts
    assert page.locator("#drift img, #drift script").count() == 0
    assert dialogs.opened == []
    screenshot(page, "dataset-drift")


def test_the_files_walk_through_more_accepted_files_than_a_page_holds(
    console: DatasetConsole, url: str, page: Page
) -> None:
    names = [f"{DATASET}/day-{n}.csv" for n in range(1, 6)]
    for n, name in enumerate(names, start=1):
        console.land(name, csv_rows(n, shift=n / 10))
    page.goto(f"{url}/datasets/{DATASET}#files")
    seen: list[str] = []
    for expected_rows in (2, 2, 1):
        rows = page.locator("#accepted-files tbody tr")
        expect(rows).to_have_count(expected_rows)
        seen += [
            text.split("gs://cascade-landing/")[1].split()[0] for text in rows.all_inner_texts()
        ]
        more = page.locator("#files-next")
        if expected_rows == 2:
            more.click()
            expect(page.locator("#files-first")).to_be_visible()
    expect(page.locator("#files-next")).to_have_count(0)
    assert sorted(seen) == names
