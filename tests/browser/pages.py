"""Small helpers that drive the chat page the way a user does.

Chrome fails every in-flight request with ``net::ERR_NETWORK_CHANGED`` when the machine's
network interfaces change — which a Docker engine does whenever a container starts or stops
(the compose tests run one on the same machine). The page rides that out where it can (the
EventSource reconnects, creating a session is retried); a page load whose scripts were cut
off, or a message whose POST was cut off, is retried here once, and only for that reason.
"""

from __future__ import annotations

import asyncio
import re
import time

from playwright.async_api import BrowserContext, Locator, Page, Request, expect
from playwright.async_api import Error as PlaywrightError

__all__ = [
    "SESSION_URL",
    "chat_titles",
    "last_reply",
    "open_chat",
    "reply_text",
    "same_owner",
    "seed_chat",
    "send",
    "session_id",
    "sign_in",
]

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


async def sign_in(context: BrowserContext, password: str) -> None:
    """The site password's login cookie in ``context`` (its request client shares the jar)."""
    answer = await context.request.post("/api/login", data={"password": password})
    assert answer.status == 204, await answer.text()


async def same_owner(context: BrowserContext, like: BrowserContext, base_url: str) -> None:
    """Open mode: ``context`` becomes the same anonymous owner as ``like`` (another device
    of one person), by the owner cookie ``like`` got from the server."""
    cookies = [c for c in await like.cookies() if c["name"] == "chatrelay_owner"]
    assert len(cookies) == 1, await like.cookies()
    await context.add_cookies(
        [{"name": "chatrelay_owner", "value": cookies[0]["value"], "url": base_url}]
    )


async def seed_chat(context: BrowserContext, *messages: str) -> str:
    """A chat of ``context``'s owner made through the API, each message answered before the
    next is sent (``echo: <message>`` from the scripted model); returns its id."""
    created = await context.request.post("/api/sessions", data={})
    assert created.status == 201, await created.text()
    session: str = (await created.json())["id"]
    for count, message in enumerate(messages, start=1):
        posted = await context.request.post(
            f"/api/sessions/{session}/messages", data={"content": message}
        )
        assert posted.status == 202, await posted.text()
        deadline = time.monotonic() + 20
        while True:
            snapshot = await (await context.request.get(f"/api/sessions/{session}")).json()
            replies = [m for m in snapshot["messages"] if m["role"] == "assistant"]
            if len(replies) == count and replies[-1]["status"] == "complete":
                break
            assert time.monotonic() < deadline, snapshot
            await asyncio.sleep(0.05)
    return session


def chat_titles(page: Page) -> Locator:
    """The titles the sidebar lists, in its order."""
    return page.locator("#recent-list .recent-item .recent-row a")
