"""Small helpers that drive the chat page the way a user does."""

from __future__ import annotations

import re

from playwright.async_api import BrowserContext, Locator, Page, expect

__all__ = ["SESSION_URL", "last_reply", "open_chat", "reply_text", "send", "session_id"]

SESSION_URL = re.compile(r"/s/[A-Za-z0-9_-]{16,}$")


async def open_chat(context: BrowserContext, path: str = "/") -> Page:
    """A new tab on ``path`` (``/`` creates a session), once its stream is live."""
    page = await context.new_page()
    await page.goto(path)
    await expect(page).to_have_url(SESSION_URL)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    return page


def session_id(page: Page) -> str:
    match = SESSION_URL.search(page.url)
    assert match, page.url
    return match.group(0).removeprefix("/s/")


async def send(page: Page, text: str) -> None:
    """Type ``text`` in the composer and press Enter."""
    await page.locator("#input").fill(text)
    await page.locator("#input").press("Enter")
    await expect(page.locator("#input")).to_have_value("")


def last_reply(page: Page) -> Locator:
    return page.locator("#messages .msg.assistant").last


async def reply_text(page: Page) -> str:
    return await last_reply(page).locator(".body").inner_text()
