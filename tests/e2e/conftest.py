"""End-to-end fixtures: a real headless Chromium (Debian's, driven by Playwright) and, for the
full-stack tests, the emulator, the sync service and the api as separate processes, launched
the way the benchmark launches them (bench.stack)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from bench.stack import Stack
from services.common.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
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


def require_chromium() -> None:
    # Never `playwright install`: the browser comes from Debian's packages (see .ci/run).
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """The whole system as `make run` starts it, on free ports, with this test's topics and
    database. Process logs are in the test's tmp_path and shown when start-up fails."""
    running = Stack(settings, tmp_path)
    try:
        await running.start_emulator()
        await running.start_sync()
        await running.start_api()
        yield running
    finally:
        await running.stop_all()
