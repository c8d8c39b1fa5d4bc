"""The console the local cloud serves (`cascade up` starts it, as the console's service
account), in headless Chromium: a dataset's page shows an upload's run as it is
processed, without a reload, and a file whose column is named ``<script>`` is rejected
and shown as text."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from playwright.sync_api import Page, expect

from cascade.cli.sample_data import sample_csv
from tests.conftest import LocalCloud
from tests.console.conftest import DialogLog, screenshot

pytestmark = pytest.mark.integration

HOSTILE_COLUMN = "<script>alert('column')</script>"


def _with_column_renamed(data: bytes, old: str, new: str) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode())))
    rows[0] = [new if name == old else name for name in rows[0]]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


@pytest.fixture
def console_url(local_cloud: LocalCloud) -> str:
    """The console the local cloud serves (`cascade up`), as the console's account."""
    url = local_cloud.local.console_url
    assert url is not None
    component = local_cloud.refresh_state().components["console"]
    assert component.status == "running"
    return url.rstrip("/")


def test_a_datasets_runs_appear_and_change_state_live_and_hostile_columns_are_text(
    local_cloud: LocalCloud, console_url: str, page: Page, dialogs: DialogLog
) -> None:
    dataset = f"console{uuid.uuid4().hex[:8]}"
    local_cloud.push_sample_config(dataset)
    page.goto(f"{console_url}/datasets/{dataset}")
    expect(page.locator("#runs-empty")).to_be_visible()
    page.evaluate("window.loadedOnce = true")
    scripts = int(page.evaluate("document.scripts.length"))  # the page's own static files

    good = f"{dataset}/day-1.csv"
    good_run = local_cloud.run_id_for(good, local_cloud.upload(good, sample_csv(600, seed=1)))
    good_state = page.locator(f'tr[data-run-id="{good_run}"] td.state')
    expect(good_state).to_have_text("running", timeout=60_000)
    local_cloud.wait_for_run(good_run, lambda run: "transform" in run.steps)  # schema saved

    broken = f"{dataset}/day-2.csv"
    data = _with_column_renamed(sample_csv(600, seed=2), "term_months", HOSTILE_COLUMN)
    broken_run = local_cloud.run_id_for(broken, local_cloud.upload(broken, data))
    broken_row = page.locator(f'tr[data-run-id="{broken_run}"]')
    expect(page.locator("#runs-body tr").first).to_have_attribute(
        "data-run-id", broken_run, timeout=60_000
    )
    expect(broken_row.locator("td.state")).to_have_text("rejected", timeout=60_000)
    expect(broken_row.locator("td.error-text")).to_contain_text("term_months")
    screenshot(page, "dataset-live")

    # The good run goes on training (the session's cloud finishes it in the background):
    # its row appeared and stayed live, and the broken run's changed state without a reload.
    assert page.evaluate("window.loadedOnce") is True  # one document all along
    assert int(page.evaluate("document.scripts.length")) == scripts  # none added by data

    page.goto(f"{console_url}/runs/{broken_run}")
    expect(page.locator("#run-state")).to_have_text("rejected")
    page.goto(f"{console_url}/runs/{broken_run}/report")
    expect(page.locator("body")).to_contain_text(HOSTILE_COLUMN)
    assert int(page.evaluate("document.scripts.length")) == 0
    assert dialogs.opened == []
