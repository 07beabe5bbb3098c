"""The chat features, each done in one tab and seen in the others."""

from __future__ import annotations

import asyncio

from playwright.async_api import BrowserContext, Page, expect

from tests.browser.browsing import Contexts
from tests.browser.pages import SESSION_URL, last_reply, open_chat, reply_text, send, session_id
from tests.browser.stack import DEMO_MODEL, REASONING_MODEL, UPSTREAM_MODEL, Stack
from tests.support.fake_upstream import slow_text


async def _complete(*tabs: Page) -> None:
    for tab in tabs:
        await expect(last_reply(tab)).to_have_attribute("data-status", "complete")


async def test_settings_are_shared_and_the_demo_model_is_labelled(
    context: BrowserContext,
) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await expect(tab2.locator("#model-label")).to_have_text(UPSTREAM_MODEL)
    await expect(tab2.locator("#demo-badge")).to_be_hidden()

    await tab1.locator("#settings-btn").click()
    # The model field offers exactly the models the gateway allows.
    options = tab1.locator("#model-options option")
    await expect(options).to_have_count(3)
    assert await options.evaluate_all("os => os.map(o => o.value)") == [
        UPSTREAM_MODEL,
        DEMO_MODEL,
        REASONING_MODEL,
    ]
    await tab1.locator("#set-system").fill("Answer like a pirate.")
    await tab1.locator("#set-model").fill(DEMO_MODEL)
    await tab1.locator("#set-temperature").fill("0.3")
    await tab1.locator("#settings-save").click()
    await expect(tab1.locator("#settings-status")).to_have_text("Saved.")

    await expect(tab2.locator("#model-label")).to_have_text(DEMO_MODEL)
    await expect(tab2.locator("#demo-badge")).to_be_visible()
    await tab2.locator("#settings-btn").click()
    await expect(tab2.locator("#set-system")).to_have_value("Answer like a pirate.")
    await expect(tab2.locator("#set-temperature")).to_have_value("0.3")

    await tab2.locator("#set-model").fill(UPSTREAM_MODEL)
    await tab2.locator("#set-temperature").fill("")
    await tab2.locator("#settings-save").click()
    await expect(tab1.locator("#model-label")).to_have_text(UPSTREAM_MODEL)
    await expect(tab1.locator("#demo-badge")).to_be_hidden()
    await expect(tab1.locator("#set-temperature")).to_have_value("")
    await expect(tab1.locator("#set-system")).to_have_value("Answer like a pirate.")

    # The reply is labelled with the model the `start` event names.
    await send(tab1, "hi")
    await _complete(tab1, tab2)
    await expect(last_reply(tab2).locator(".msg-model")).to_have_text(UPSTREAM_MODEL)


async def test_regenerate_edit_and_clear_show_in_every_tab(context: BrowserContext) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await send(tab1, "first question")
    await _complete(tab1, tab2)
    old_reply = await last_reply(tab2).get_attribute("data-id")

    # Regenerate (from tab 2) replaces the last answer everywhere.
    await last_reply(tab2).locator("[data-action=regenerate]").click()
    for tab in (tab1, tab2):
        await expect(last_reply(tab)).not_to_have_attribute("data-id", old_reply or "")
        await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
        await expect(tab.locator("#messages .msg")).to_have_count(2)
        assert await reply_text(tab) == "echo: first question"

    # Edit-and-resend (from tab 2): the old question and its answer are replaced.
    await tab2.locator(".msg.user [data-action=edit]").click()
    await tab2.locator(".msg.user .edit-area").fill("second question")
    await tab2.locator(".msg.user [data-action=edit-send]").click()
    for tab in (tab1, tab2):
        await expect(tab.locator(".msg.user .body")).to_have_text(["second question"])
        await expect(last_reply(tab).locator(".body")).to_have_text("echo: second question")
        await expect(tab.locator("#messages .msg")).to_have_count(2)

    # Clear (from tab 1, two clicks: the first one asks to confirm).
    await tab1.locator("#clear-btn").click()
    await expect(tab1.locator("#clear-btn")).to_have_text("Clear everything?")
    await tab1.locator("#clear-btn").click()
    for tab in (tab1, tab2):
        await expect(tab.locator("#messages .msg")).to_have_count(0)
        await expect(tab.locator("#empty")).to_be_visible()

    # A reload shows the same (empty) conversation, and the session still works.
    await tab2.reload()
    await expect(tab2.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(tab2.locator("#messages .msg")).to_have_count(0)
    await send(tab2, "after clearing")
    await expect(last_reply(tab1).locator(".body")).to_have_text("echo: after clearing")


async def test_upstream_error_shows_a_card_with_retry(context: BrowserContext) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await send(tab1, "fail 429")
    for tab in (tab1, tab2):
        await expect(last_reply(tab)).to_have_attribute("data-status", "error")
        card = last_reply(tab).locator(".error-card")
        await expect(card).to_be_visible()
        await expect(card).to_contain_text("The reply failed")
        await expect(card.locator("[data-action=regenerate]")).to_have_text("Retry")
    failed = await last_reply(tab1).get_attribute("data-id")

    await last_reply(tab2).locator(".error-card [data-action=regenerate]").click()
    for tab in (tab1, tab2):  # a new attempt replaced the failed one (and failed again)
        await expect(last_reply(tab)).not_to_have_attribute("data-id", failed or "")
        await expect(last_reply(tab)).to_have_attribute("data-status", "error")
        await expect(tab.locator("#messages .msg")).to_have_count(2)

    await send(tab2, "and now?")
    await expect(last_reply(tab1).locator(".body")).to_have_text("echo: and now?")


async def test_cut_upstream_stream_keeps_the_partial_text_with_an_error_card(
    context: BrowserContext,
) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await send(tab1, "cut 8")
    for tab in (tab1, tab2):
        await expect(last_reply(tab)).to_have_attribute("data-status", "error")
        await expect(last_reply(tab).locator(".error-card")).to_be_visible()
        await expect(last_reply(tab).locator(".body")).to_have_text(slow_text(8))
    await tab2.reload()  # the snapshot has the same: partial text, status error
    await expect(last_reply(tab2)).to_have_attribute("data-status", "error")
    await expect(last_reply(tab2).locator(".error-card [data-action=regenerate]")).to_be_visible()
    await expect(last_reply(tab2).locator(".body")).to_have_text(slow_text(8))


async def test_composer_keys(context: BrowserContext) -> None:
    page = await open_chat(context)
    box = page.locator("#input")
    one_line = (await box.bounding_box() or {"height": 0})["height"]

    # Shift+Enter is a new line; the box grows with the text.
    await box.press_sequentially("line one")
    for n in range(2, 5):
        await box.press("Shift+Enter")
        await box.press_sequentially(f"line {n}")
    assert await box.input_value() == "line one\nline 2\nline 3\nline 4"
    grown = (await box.bounding_box() or {"height": 0})["height"]
    assert grown > one_line * 2, (one_line, grown)
    await expect(page.locator("#messages .msg")).to_have_count(0)

    # Enter that ends an IME composition does not send.
    await page.evaluate("""() => {
        const box = document.getElementById('input');
        for (const init of [{isComposing: true}, {keyCode: 229}]) {
            box.dispatchEvent(new KeyboardEvent('keydown', {
                key: 'Enter', bubbles: true, cancelable: true, ...init}));
        }
    }""")
    await asyncio.sleep(0.5)
    await expect(page.locator("#messages .msg")).to_have_count(0)

    await box.press("Enter")
    await expect(page.locator(".msg.user .body")).to_have_text("line one\nline 2\nline 3\nline 4")
    await expect(box).to_have_value("")
    await _complete(page)


async def test_recent_sessions_and_new_chat(context: BrowserContext) -> None:
    page = await open_chat(context)
    first = session_id(page)
    await send(page, "remember this chat")
    await _complete(page)
    current = page.locator("#recent-list a[aria-current=page]")
    await expect(current).to_have_text("remember this chat")

    first_url = page.url
    await page.locator("#new-chat").click()
    # page.url is read before the click: read after, it may already be the new chat's.
    await expect(page).not_to_have_url(first_url)
    await expect(page).to_have_url(SESSION_URL)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    assert session_id(page) != first
    await expect(page.locator("#empty")).to_be_visible()

    await page.locator("#recent-list a", has_text="remember this chat").click()
    await expect(page).to_have_url(f"/s/{first}")
    await expect(page.locator(".msg.user .body")).to_have_text("remember this chat")
    await expect(last_reply(page).locator(".body")).to_have_text("echo: remember this chat")


async def test_unknown_session_says_so(context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto("/s/" + "x" * 22)
    await expect(page.locator("#fatal")).to_contain_text("does not exist")
    await expect(page.locator("#fatal a")).to_have_attribute("href", "/")


async def test_phone_layout_has_a_drawer(contexts: Contexts, stack: Stack) -> None:
    phone = await contexts.new(
        stack.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = await open_chat(phone)
    await send(page, "on a phone")
    await _complete(page)
    sidebar = page.locator("#sidebar")
    await expect(sidebar).not_to_be_in_viewport()
    no_overflow = await page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    assert no_overflow, "the page scrolls sideways on a phone"

    await page.locator("#menu").tap()
    await expect(page.locator("#scrim")).to_be_visible()
    await expect(sidebar.locator("#recent-list a")).to_have_text(["on a phone"])
    await expect(sidebar).to_be_in_viewport(ratio=0.95)
    await page.locator("#close-drawer").tap()
    await expect(page.locator("#scrim")).to_be_hidden()
    await expect(sidebar).not_to_be_in_viewport()


async def test_escape_stops_the_streaming_reply_in_every_tab(context: BrowserContext) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await send(tab1, "slow 400 40")  # would take 16 s
    await expect(last_reply(tab2).locator(".body")).to_contain_text("w003")
    await tab1.locator("#input").press("Escape")
    for tab in (tab1, tab2):
        await expect(last_reply(tab)).to_have_attribute("data-status", "stopped")
        await expect(last_reply(tab).locator(".note")).to_have_text("Stopped.")
    assert "w400" not in await reply_text(tab2)


async def test_escape_closes_the_settings_without_stopping_the_reply(
    context: BrowserContext,
) -> None:
    tab = await open_chat(context)
    await send(tab, "slow 60 40")
    await expect(last_reply(tab).locator(".body")).to_contain_text("w003")
    await tab.locator("#settings-btn").click()
    await expect(tab.locator("#settings")).to_be_visible()
    await tab.keyboard.press("Escape")
    await expect(tab.locator("#settings")).to_be_hidden()
    await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
    assert await reply_text(tab) == slow_text(60)
