"""The console in headless Chromium, over an in-memory bucket: live rows, hostile data
shown as text, CSRF on the retrain form, pagination. Synchronised with Playwright's
``expect`` (each with a deadline), never with sleeps."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from cascade.core.messages import TrainRequest
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from tests.console.builders import ConsoleUnderTest, console_under_test, step
from tests.console.conftest import DialogLog, screenshot
from tests.console.server import serving

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert('y')>"


@pytest.fixture
def console() -> ConsoleUnderTest:
    return console_under_test(page_size=3)


@pytest.fixture
def url(console: ConsoleUnderTest) -> Iterator[str]:
    with serving(console.app) as base:
        yield base


def _script_count(page: Page) -> int:
    return int(page.evaluate("document.scripts.length"))


def _rewrite(console: ConsoleUnderTest, record: RunRecord, **changes: object) -> None:
    name = RunPaths(record.run_id).record
    console.artifacts.write(name, record.model_copy(update=changes).model_dump_json().encode())


def test_new_runs_and_state_changes_appear_without_a_reload(
    console: ConsoleUnderTest, url: str, page: Page
) -> None:
    first = console.add_run("credit", 1, state="running")
    page.goto(f"{url}/runs")
    expect(page.locator(f'tr[data-run-id="{first.run_id}"] td.state')).to_have_text("running")
    page.evaluate("window.loadedOnce = true")

    second = console.add_run("credit", 2, state="running")
    _rewrite(console, first, state="succeeded")

    expect(page.locator("#runs-body tr").first).to_have_attribute("data-run-id", second.run_id)
    expect(page.locator(f'tr[data-run-id="{first.run_id}"] td.state')).to_have_text("succeeded")
    assert page.evaluate("window.loadedOnce") is True  # the same document: no reload


def test_hostile_errors_and_file_names_render_as_text(
    console: ConsoleUnderTest, url: str, page: Page, dialogs: DialogLog
) -> None:
    run = console.add_run(
        "credit",
        1,
        state="rejected",
        error=f"column {HOSTILE} is not in the schema",
        steps={"validate": step("rejected", 1, 0.8, error=f"credit/1.csv: column {HOSTILE}")},
    )
    _rewrite(
        console, run, trigger=run.trigger.model_copy(update={"uri": f"gs://landing/{HOSTILE}"})
    )

    page.goto(f"{url}/runs")
    scripts = _script_count(page)
    error_cell = page.locator(f'tr[data-run-id="{run.run_id}"] td.error-text')
    expect(error_cell).to_contain_text(HOSTILE)
    expect(page.locator("#runs")).to_have_attribute("data-refreshed", re.compile(r"\d+"))
    expect(error_cell).to_contain_text(HOSTILE)  # rebuilt from JSON by the page's script
    assert _script_count(page) == scripts == 1
    assert page.locator("#runs-body img").count() == 0

    page.goto(f"{url}/runs/{run.run_id}")
    expect(page.locator("#run-error")).to_have_text(f"column {HOSTILE} is not in the schema")
    expect(page.locator("table.timeline")).to_contain_text(HOSTILE)
    assert _script_count(page) == 0
    assert page.locator("main img").count() == 0

    page.goto(f"{url}/runs/{run.run_id}/report")
    expect(page.locator("body")).to_contain_text(HOSTILE)
    assert _script_count(page) == 0
    assert dialogs.opened == []


def test_the_retrain_form_is_refused_without_its_csrf_token_and_accepted_with_it(
    console: ConsoleUnderTest, url: str, page: Page
) -> None:
    console.add_run("credit", 1)
    page.goto(f"{url}/datasets/credit")
    page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    page.fill("input[name=reason]", "labels were fixed")

    with page.expect_response(re.compile(r"/retrain$")) as refused:
        page.click("form.action button[type=submit]")
    assert refused.value.status == 403
    expect(page.locator(".error")).to_contain_text("CSRF")
    assert console.bus.published == []

    page.goto(f"{url}/datasets/credit")
    page.fill("input[name=reason]", "labels were fixed")
    page.click("form.action button[type=submit]")

    expect(page.locator("#requested")).to_contain_text("Train request published")
    published = console.bus.of_type(TrainRequest)
    assert len(published) == 1
    assert isinstance(published[0], TrainRequest)
    assert published[0].reason.endswith("from the console: labels were fixed")
    screenshot(page, "dataset")


def test_pages_walk_through_more_runs_than_a_page_holds(
    console: ConsoleUnderTest, url: str, page: Page
) -> None:
    runs = [console.add_run("credit", number) for number in range(8)]
    page.goto(f"{url}/runs")

    seen: list[str] = []
    while True:
        rows = page.locator("#runs-body tr")
        expect(rows.first).to_be_visible()
        seen += [row.get_attribute("data-run-id") or "" for row in rows.all()]
        older = page.locator("#next-page")
        if older.count() == 0:
            break
        older.click()
        expect(page.locator("#first-page")).to_be_visible()

    assert seen == [run.run_id for run in reversed(runs)]


def test_screenshots_of_the_pages(console: ConsoleUnderTest, url: str, page: Page) -> None:
    """A realistic list and a run with its timeline (saved when asked for)."""
    steps = {
        "validate": step("succeeded", 0.2, 0.45),
        "transform": step("succeeded", 0.8, 0.93),
        "train": step("succeeded", 1.9, 0.15),
        "training_job": step("succeeded", 2.1, 18.0),
        "evaluate": step("succeeded", 20.3, 0.5),
        "deploy": step("succeeded", 21.0, 1.8),
    }
    console.add_run("churn", 1, state="rejected", error="churn/1.csv: column 'tenure' is missing")
    console.add_run("credit", 2, state="succeeded", steps=steps)
    run = console.add_run(
        "credit", 3, state="running", steps={"validate": step("running", 3, None)}
    )
    page.goto(f"{url}/runs")
    expect(page.locator("#runs-body tr")).to_have_count(3)
    screenshot(page, "runs")

    full = console.add_run("credit", 4, state="succeeded", steps=steps)
    page.goto(f"{url}/runs/{full.run_id}")
    expect(page.locator("table.timeline tbody tr")).to_have_count(len(steps))
    screenshot(page, "run")
    for name, size in [("validation/stats.pb", 18_211), ("training/model/saved_model.pb", 402)]:
        console.artifacts.write(f"runs/{full.run_id}/{name}", b"x" * size)
    page.click("#artifacts-link")
    expect(page.locator("table.artifacts tbody tr")).to_have_count(3)
    screenshot(page, "artifacts")
    page.goto(f"{url}/runs/{run.run_id}")
    expect(page.locator("#run-state")).to_have_text("running")
