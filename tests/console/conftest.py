"""Headless Chromium for the console's browser tests (Debian's package, driven by
Playwright); a page that records every dialog a script opens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# This machine's network is closed: without these flags Chromium waits on connections
# that never open (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS_ENV = "CASCADE_CONSOLE_SCREENSHOTS"
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "docs" / "console"
DEADLINE_MS = 15_000
"""How long an action or an ``expect`` waits for its condition (the machine is shared)."""

expect.set_options(timeout=DEADLINE_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class DialogLog:
    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, dialog: Dialog) -> None:
        self.opened.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def dialogs() -> DialogLog:
    return DialogLog()


@pytest.fixture
def page(browser: Browser, dialogs: DialogLog) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.on("dialog", dialogs)
    opened.set_default_timeout(DEADLINE_MS)
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> None:
    """Save the page as docs/console/<name>.png when CASCADE_CONSOLE_SCREENSHOTS=1."""
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)
