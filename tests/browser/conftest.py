"""Fixtures for the browser tests: the real stack behind nginx (TLS + HTTP/2) and Debian's
chromium driven by Playwright (async API; `playwright install` cannot download browsers here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from tests.browser.stack import Stack, run_stack

CHROMIUM = os.environ.get("CHATRELAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SITE_PASSWORD = "correct horse battery staple"

# Runs in every page before its own scripts: records CSP violations.
_WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@dataclass
class Watch:
    """What the pages of one test did that they must not: dialogs, uncaught errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        self.pages.append(page)

        async def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def csp_violations(self) -> list[str]:
        found: list[str] = []
        for page in self.pages:
            if page.is_closed():
                continue
            with contextlib.suppress(PlaywrightError):  # a page mid-navigation
                found += await page.evaluate("window.__csp || []")
        return found


@pytest.fixture(scope="session")
def stack(redis_server_url: str) -> Iterator[Stack]:
    if shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None:
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


class Contexts:
    """Opens browser contexts (≈ separate browsers/devices) against one stack."""

    def __init__(self, browser: Browser, watch: Watch) -> None:
        self.browser = browser
        self.watch = watch
        self.opened: list[BrowserContext] = []

    async def new(self, base_url: str, **options: Any) -> BrowserContext:
        context = await self.browser.new_context(
            base_url=base_url, ignore_https_errors=True, **options
        )
        context.set_default_timeout(15_000)
        await context.add_init_script(_WATCH)
        context.on("page", self.watch.attach)
        self.opened.append(context)
        return context


@pytest.fixture
async def contexts(browser: Browser, watch: Watch) -> AsyncIterator[Contexts]:
    opened = Contexts(browser, watch)
    yield opened
    violations = await watch.csp_violations()
    for context in opened.opened:
        await context.close()
    assert not watch.errors, f"uncaught page errors: {watch.errors}"
    assert not violations, f"CSP violations: {violations}"


@pytest.fixture
async def context(contexts: Contexts, stack: Stack) -> BrowserContext:
    """One browser (all its tabs share one HTTP/2 connection to the edge)."""
    return await contexts.new(stack.url)
