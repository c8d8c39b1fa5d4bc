"""The alerts page: dead letters as the recorder keeps them (paged by one listing each),
hostile messages shown as text, and the runs that raised alerts."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import Page, expect

from cascade.core.paths import dead_letter_record
from cascade.core.runs import run_id_for_object
from cascade.steps.dead_letter import DeadLetter
from tests.console.builders import T0, ConsoleUnderTest, console_under_test
from tests.console.conftest import DialogLog, screenshot
from tests.console.server import serving

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert('y')>"
SUBSCRIPTION = "projects/local-project/subscriptions/cascade-validate"


def _letter(console: ConsoleUnderTest, message_id: str, minute: int, data: str = "{}") -> str:
    run_id = run_id_for_object("credit", "landing", f"credit/{message_id}.csv", 1)
    letter = DeadLetter(
        message_id=message_id,
        source_subscription=SUBSCRIPTION,
        delivery_attempts=5,
        last_error=f"validate: {HOSTILE}" if "<" in data else "validate: timeout",
        message_type="object_finalize",
        dataset="credit",
        run_id=run_id,
        attributes={"bucketId": "landing", "objectId": f"credit/{message_id}.csv"},
        data=data,
        recorded_at=T0 + timedelta(minutes=minute),
    )
    console.artifacts.create(dead_letter_record(message_id), letter.model_dump_json().encode())
    return run_id


@pytest.fixture
def console() -> ConsoleUnderTest:
    return console_under_test(page_size=3)


@pytest.fixture
def url(console: ConsoleUnderTest) -> Iterator[str]:
    with serving(console.app) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url) as client:
        yield client


def test_dead_letters_show_reason_subscription_run_and_message(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    run_id = _letter(console, "1001", 1, data='{"name": "credit/1001.csv"}')

    page = client.get("/alerts")

    assert page.status_code == 200
    html = page.text
    assert "object_finalize message 1001 dead-lettered after 5 delivery attempts" in html
    assert "validate: timeout" in html
    assert SUBSCRIPTION in html
    assert f'href="/runs/{run_id}"' in html
    assert "{&#34;name&#34;: &#34;credit/1001.csv&#34;}" in html


def test_each_page_is_newest_first_and_pages_follow_the_listing(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    for number in range(7):
        _letter(console, f"20{number}", minute=number)

    first = client.get("/alerts").text
    shown = re.findall(r'data-message-id="(\d+)"', first)
    assert shown == ["202", "201", "200"]
    token = re.search(r'href="/alerts\?page=([A-Za-z0-9_-]+)"', first)
    assert token is not None
    second = client.get(f"/alerts?page={token.group(1)}").text
    assert re.findall(r'data-message-id="(\d+)"', second) == ["205", "204", "203"]
    token = re.search(r'href="/alerts\?page=([A-Za-z0-9_-]+)"', second)
    assert token is not None
    third = client.get(f"/alerts?page={token.group(1)}").text
    assert re.findall(r'data-message-id="(\d+)"', third) == ["206"]
    assert 'id="older-letters"' not in third


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "x" * 401,
        base64.urlsafe_b64encode(b"index/runs/all/1").decode().rstrip("="),
        base64.urlsafe_b64encode(b"dead-letters/\x00").decode().rstrip("="),
        "%ff%fe",
    ],
)
def test_a_foreign_or_broken_page_token_is_a_400(client: httpx.Client, token: str) -> None:
    page = client.get(f"/alerts?page={token}")

    assert page.status_code == 400
    assert "page" in page.text


def test_an_unreadable_dead_letter_is_named_not_a_500(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    console.artifacts.create("dead-letters/broken.json", b"{not json")

    page = client.get("/alerts")

    assert page.status_code == 200
    assert "dead-letters/broken.json: not a dead-letter record" in page.text


def test_failed_and_rejected_runs_are_shown_as_what_raised_alerts(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    failed = console.add_run("credit", 1, state="failed", error="train: job failed")
    rejected = console.add_run("credit", 2, state="rejected", error="column age: out of range")
    fine = console.add_run("credit", 3)

    html = client.get("/alerts").text

    assert f'data-run-id="{failed.run_id}"' in html
    assert "train: job failed" in html
    assert f'data-run-id="{rejected.run_id}"' in html
    assert "column age: out of range" in html
    assert f'data-run-id="{fine.run_id}"' not in html
    assert "the system keeps no copy" in html


def test_a_hostile_dead_letter_renders_as_text_in_the_browser(
    console: ConsoleUnderTest, url: str, page: Page, dialogs: DialogLog
) -> None:
    _letter(console, "3001", 1, data=HOSTILE)
    console.add_run("credit", 2, state="rejected", error=f"column {HOSTILE} is not in the schema")
    for number in range(3):
        _letter(console, f"400{number}", minute=10 + number)

    page.goto(f"{url}/alerts")

    expect(page.locator('tr[data-message-id="3001"] pre.message')).to_have_text(HOSTILE)
    expect(page.locator('tr[data-message-id="3001"] td.reason')).to_contain_text(HOSTILE)
    expect(page.locator("#alerting-rejected td.error-text")).to_contain_text(HOSTILE)
    assert page.locator("main img").count() == 0
    assert int(page.evaluate("document.scripts.length")) == 0
    assert dialogs.opened == []
    screenshot(page, "alerts")
    page.locator("#older-letters").click()
    expect(page.locator("tr[data-message-id]")).to_have_count(1)
    assert dialogs.opened == []
