"""Browser-side helpers shared by the fixtures and the tests: Debian's chromium driven by
Playwright (async API; `playwright install` cannot download browsers here)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, Request
from playwright.async_api import Error as PlaywrightError

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

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "SITE_PASSWORD", "Contexts", "Watch"]

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
    console: list[str] = field(default_factory=list)  # for the failure report only

    def attach(self, page: Page) -> None:
        self.pages.append(page)

        async def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        page.on("requestfailed", self._failed)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console.append(message.text)

    def _failed(self, request: Request) -> None:
        self.console.append(f"request failed: {request.method} {request.url} {request.failure}")

    async def csp_violations(self) -> list[str]:
        found: list[str] = []
        for page in self.pages:
            if page.is_closed():
                continue
            with contextlib.suppress(PlaywrightError):  # a page mid-navigation
                found += await page.evaluate("window.__csp || []")
        return found


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
