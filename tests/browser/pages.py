"""Small helpers that drive the chat page the way a user does.

Chrome fails every in-flight request with ``net::ERR_NETWORK_CHANGED`` when the machine's
network interfaces change — which a Docker engine does whenever a container starts or stops
(the compose tests run one on the same machine). The page rides that out where it can (the
EventSource reconnects, creating a session is retried); a page load whose scripts were cut
off, or a message whose POST was cut off, is retried here once, and only for that reason.
"""

from __future__ import annotations

import re

from playwright.async_api import BrowserContext, Locator, Page, Request, expect
from playwright.async_api import Error as PlaywrightError

__all__ = ["SESSION_URL", "last_reply", "open_chat", "reply_text", "send", "session_id"]

SESSION_URL = re.compile(r"/s/[A-Za-z0-9_-]{16,}$")
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"


class _NetworkChanges:
    def __init__(self, page: Page) -> None:
        self.seen = 0
        page.on("requestfailed", self._failed)

    def _failed(self, request: Request) -> None:
        if NETWORK_CHANGED in (request.failure or ""):
            self.seen += 1


async def open_chat(context: BrowserContext, path: str = "/") -> Page:
    """A new tab on ``path`` (``/`` creates a session), once its stream is live."""
    page = await context.new_page()
    changes = _NetworkChanges(page)
    for attempt in (1, 2):
        wait = 8_000 if attempt == 1 else 15_000
        try:
            await page.goto(path)
            await expect(page).to_have_url(SESSION_URL, timeout=wait)
            await expect(page.locator("#conn")).to_have_attribute(
                "data-state", "live", timeout=wait
            )
        except PlaywrightError as exc:  # the navigation itself was cut
            if attempt == 2 or NETWORK_CHANGED not in str(exc):
                raise
        except AssertionError:
            if attempt == 2 or not changes.seen:
                raise
            changes.seen = 0
        else:
            break
    return page


def session_id(page: Page) -> str:
    match = SESSION_URL.search(page.url)
    assert match, page.url
    return match.group(0).removeprefix("/s/")


async def send(page: Page, text: str) -> None:
    """Type ``text`` in the composer and press Enter."""
    box = page.locator("#input")
    await box.fill(text)
    await box.press("Enter")
    try:
        await expect(box).to_have_value("", timeout=5_000)
    except AssertionError:
        # The POST never reached the server: the page says so and keeps the text.
        await expect(page.locator("#toast")).to_contain_text("cannot reach the server")
        await box.press("Enter")
        await expect(box).to_have_value("")


def last_reply(page: Page) -> Locator:
    return page.locator("#messages .msg.assistant").last


async def reply_text(page: Page) -> str:
    return await last_reply(page).locator(".body").inner_text()
