"""Share links on the page (issue 11): the Share panel makes a copyable link; a third browser,
signed out, opens it and watches the answer stream live with nothing that writes; Revoke
ends that view at once; an unknown link says so."""

from __future__ import annotations

import re

from playwright.async_api import BrowserContext, Page, expect

from tests.browser.browsing import SITE_PASSWORD, Contexts
from tests.browser.pages import last_reply, open_chat, send, sign_in
from tests.browser.stack import Stack
from tests.support.fake_upstream import slow_text

SHARE_URL = re.compile(r"^https://127\.0\.0\.1:\d+/r/[A-Za-z0-9_-]{16,}$")
# What a viewer must not be offered: anything that writes, and the owner's list.
WRITING = (
    "#input",
    "#send",
    "#stop",
    "#settings-btn",
    "#clear-btn",
    "#share-btn",
    "#sidebar",
    "[data-action=edit]",
    "[data-action=regenerate]",
    "#logout",
)


async def _share(page: Page) -> str:
    await page.locator("#share-btn").click()
    await page.locator("#share-create").click()
    url = page.locator("#share-url")
    await expect(url).to_have_value(SHARE_URL)
    return await url.input_value()


async def _viewer(contexts: Contexts, stack: Stack, url: str) -> Page:
    signed_out = await contexts.new(stack.url)
    page = await signed_out.new_page()
    await page.goto(url)
    await expect(page).to_have_url(url)  # not sent to /login
    return page


async def test_a_signed_out_viewer_watches_the_reply_live_and_revoke_ends_it(
    contexts: Contexts, auth_stack: Stack
) -> None:
    owner = await contexts.new(auth_stack.url)
    await owner.grant_permissions(["clipboard-read", "clipboard-write"])
    await sign_in(owner, SITE_PASSWORD)
    tab = await open_chat(owner)
    await send(tab, "before sharing")
    await expect(last_reply(tab).locator(".body")).to_have_text("echo: before sharing")
    url = await _share(tab)
    await tab.locator("#share-copy").click()
    await expect(tab.locator("#share-copy")).to_have_text("Copied")
    assert await tab.evaluate("navigator.clipboard.readText()") == url
    assert "/s/" not in url
    assert tab.url.rsplit("/", 1)[1] not in url  # the session id stays private

    viewer = await _viewer(contexts, auth_stack, url)
    await expect(viewer.locator(".msg.user .body")).to_have_text(["before sharing"])
    await expect(viewer.locator("#readonly-badge")).to_be_visible()
    await expect(viewer.locator(".msg.user .who")).to_have_text(["User"])  # not "You"
    await expect(viewer.locator("#conn-label")).to_have_text("connected")
    await expect(viewer.locator("#live-badge")).to_be_hidden()
    for selector in WRITING:
        await expect(viewer.locator(selector)).to_have_count(0)

    await send(tab, "slow 150 40")  # about 6 s
    await expect(last_reply(viewer)).to_have_attribute("data-status", "streaming")
    await expect(viewer.locator("#live-badge")).to_have_text("live")
    await expect(viewer.locator("#live-badge")).to_be_visible()
    await expect(last_reply(viewer)).to_have_attribute("data-status", "complete", timeout=30_000)
    await expect(viewer.locator("#live-badge")).to_be_hidden()
    await expect(last_reply(viewer).locator(".body")).to_have_text(slow_text(150))
    assert (
        await last_reply(viewer).locator(".body").inner_text()
        == await last_reply(tab).locator(".body").inner_text()
    )
    for selector in WRITING:
        await expect(viewer.locator(selector)).to_have_count(0)

    # Revoke, while a reply streams: the viewer's stream ends and says why.
    await send(tab, "slow 300 40")
    await expect(last_reply(viewer).locator(".body")).to_contain_text("w003")
    await tab.locator("#share-revoke").click()
    await expect(tab.locator("#share-status")).to_contain_text("revoked")
    await expect(tab.locator("#share-create")).to_be_visible()
    await expect(viewer.locator("#fatal")).to_contain_text("This share link was revoked")
    await expect(viewer.locator("#messages .msg")).to_have_count(0)
    await expect(viewer.locator("#live-badge")).to_be_hidden()
    await expect(viewer.locator("#conn")).to_have_attribute("data-state", "offline")
    # The owner's own tab goes on.
    await expect(last_reply(tab)).to_have_attribute("data-status", "streaming")
    await tab.locator("#stop").click()

    again = await viewer.context.new_page()
    await again.goto(url)
    await expect(again.locator("#fatal")).to_contain_text("does not exist or was revoked")


async def test_an_unknown_share_link_says_so(context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto("/r/" + "x" * 32)
    await expect(page.locator("#fatal")).to_contain_text("does not exist or was revoked")
    await expect(page.locator("#fatal a")).to_have_count(0)
    await expect(page.locator("#input")).to_have_count(0)
