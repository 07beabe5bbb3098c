"""The fixtures tests/browser/conftest.py exposes (kept apart so that conftest can skip
them when playwright is missing)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright, expect

from scripts.processes import find_tool
from tests.browser.browsing import CHROMIUM, CHROMIUM_ARGS, SITE_PASSWORD, Contexts, Watch
from tests.browser.stack import Stack, run_stack

__all__ = ["auth_stack", "browser", "chromium", "context", "contexts", "stack", "watch"]

# Generous: CI machines have 2 cores, and a dropped stream reconnects after ~3 s.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def stack(redis_server_url: str) -> Iterator[Stack]:
    if find_tool("nginx") is None:
        pytest.fail("nginx is not installed: run `make browser-deps`")
    with run_stack(redis_server_url, name="main") as running:
        yield running


@pytest.fixture(scope="session")
def auth_stack(redis_server_url: str) -> Iterator[Stack]:
    with run_stack(redis_server_url, name="auth", password=SITE_PASSWORD) as running:
        yield running


@pytest.fixture(scope="session")
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
async def contexts(browser: Browser, watch: Watch) -> AsyncIterator[Contexts]:
    opened = Contexts(browser, watch)
    yield opened
    violations = await watch.csp_violations()
    if watch.console:  # shown by pytest when the test failed
        print("browser console errors and failed requests:", *watch.console, sep="\n  ")
    for context in opened.opened:
        await context.close()
    assert not watch.errors, f"uncaught page errors: {watch.errors}"
    assert not violations, f"CSP violations: {violations}"


@pytest.fixture
async def context(contexts: Contexts, stack: Stack) -> BrowserContext:
    """One browser (all its tabs share one HTTP/2 connection to the edge)."""
    return await contexts.new(stack.url)
