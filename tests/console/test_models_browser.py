"""The models pages in headless Chromium over an in-memory bucket: a rollback from the
models page moves the traffic the local model server routes by; a promotion; a
rejected run force-blessed from its page; the forms refused without their CSRF token.
Synchronised with Playwright's ``expect`` (each with a deadline), never with sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from playwright.sync_api import Page, expect

from cascade.core.runs import RunRecord
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.servable import Servable
from cascade.serving.server import _routes
from cascade.serving.state import ServingState, read_serving_state
from tests.console.builders import LOCAL_USER
from tests.console.conftest import DialogLog, screenshot
from tests.console.models_builders import ModelsConsole, deploy, evaluation, models_console
from tests.console.server import serving

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert('y')>"


@pytest.fixture
def console() -> ModelsConsole:
    return models_console()


@pytest.fixture
def url(console: ModelsConsole) -> Iterator[str]:
    with serving(console.app) as base:
        yield base


def _state(console: ModelsConsole) -> ServingState:
    found = read_serving_state(console.artifacts, "credit")
    assert found is not None
    return found[0]


def _model_server_routes(state: ServingState) -> tuple[tuple[float, str], ...]:
    """The local model server's routing table for ``state`` with every version loaded."""
    loaded = dict.fromkeys((entry.version for entry in state.deployed), cast(Servable, None))
    return _routes(state, loaded)


def _two_versions(console: ModelsConsole) -> tuple[RunRecord, RunRecord]:
    first = console.add_run("credit", 1)
    second = console.add_run("credit", 2)
    deploy(console, first, ["credit/2026-10.csv"])
    deploy(console, second, ["credit/2026-10.csv", "credit/2026-11.csv"])
    return first, second


def test_a_rollback_from_the_models_page_moves_the_traffic_to_the_previous_version(
    console: ModelsConsole, url: str, page: Page, dialogs: DialogLog
) -> None:
    _two_versions(console)
    assert _model_server_routes(_state(console)) == ((100.0, "2"),)
    page.goto(f"{url}/models/credit")
    expect(page.locator('#traffic tr[data-version="2"] td.share')).to_have_text("100%")

    page.fill("#rollback-form input[name=reason]", "v2 over-predicts defaults")
    page.click("#rollback-form button")

    expect(page.locator("#done")).to_be_visible()
    expect(page.locator('#traffic tr[data-version="1"] td.share')).to_have_text("100%")
    expect(page.locator('#versions tr[data-version="2"] td.version-state')).to_have_text(
        "rolled_back"
    )
    expect(page.locator("#history tbody tr").first.locator("td.actor")).to_have_text(LOCAL_USER)
    state = _state(console)
    assert state.traffic == {"1": 100}
    assert _model_server_routes(state) == ((100.0, "1"),)
    assert state.history[-1].reason == "v2 over-predicts defaults"
    assert dialogs.opened == []
    screenshot(page, "models")


def test_a_canary_is_promoted_from_the_models_page(
    console: ModelsConsole, url: str, page: Page
) -> None:
    deploy(console, console.add_run("credit", 1), ["credit/2026-10.csv"])
    deploy(console, console.add_run("credit", 2), ["credit/2026-11.csv"], share=10)
    page.goto(f"{url}/models/credit")

    row = page.locator('#versions tr[data-version="2"]')
    row.locator("input[name=reason]").fill("canary holds up")
    row.locator("button").click()

    expect(page.locator('#traffic tr[data-version="2"] td.share')).to_have_text("100%")
    assert _model_server_routes(_state(console)) == ((100.0, "2"),)


def test_a_rollback_form_without_its_csrf_token_is_refused(
    console: ModelsConsole, url: str, page: Page
) -> None:
    _two_versions(console)
    page.goto(f"{url}/models/credit")
    page.evaluate("document.querySelector('#rollback-form input[name=csrf_token]').remove()")

    page.fill("#rollback-form input[name=reason]", "no token")
    page.click("#rollback-form button")

    expect(page.locator("p.error")).to_contain_text("CSRF token is missing or wrong")
    assert _state(console).traffic == {"2": 100}


def test_a_rejected_run_is_force_blessed_from_its_page(
    console: ModelsConsole, url: str, page: Page, dialogs: DialogLog
) -> None:
    run = console.add_run("credit", 3, state="rejected", error=f"auc below 0.8 {HOSTILE}")
    console.artifacts.write_json(evaluation_path(run.run_id), evaluation(run, "not_blessed"))
    page.goto(f"{url}/runs/{run.run_id}")
    expect(page.locator("#bless-verdict")).to_have_text("not_blessed")
    screenshot(page, "models_bless")

    page.fill("#bless-form input[name=reason]", f"accepted regression {HOSTILE}")
    page.click("#bless-form button")

    expect(page.locator("#bless-verdict")).to_have_text("force_blessed")
    expect(page.locator("#bless-note")).to_contain_text(
        f"force-blessed by {LOCAL_USER} via console (was not_blessed): accepted regression"
    )
    expect(page.locator("#bless-note")).to_contain_text(HOSTILE)  # as text
    expect(page.locator("#run-state")).to_have_text("running")  # the deploy step finishes it
    assert page.locator("main img").count() == 0
    assert dialogs.opened == []
    found = console.artifacts.read_model(evaluation_path(run.run_id), EvaluationRecord)
    assert found is not None
    assert found[0].override is not None
    assert found[0].override.actor == LOCAL_USER
